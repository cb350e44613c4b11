"""Rate limits in Redis, shared by every process: a sliding-window log.

Each identity's key is a sorted set of the times of its accepted requests; one Lua call
drops those older than the window, admits the request if fewer than `requests` remain
(and records it), and answers what the `RateLimit-*` headers need. So "L per minute"
means at most L in any 60 seconds, across every API process (a token bucket would let
nearly 2L through in a minute), and a refused request costs nothing and records nothing.
The clock is Redis's own, so processes on different machines agree.

`limits` (the library) was considered: its async strategies answer only "allowed or
not" and need a second round trip for the remaining quota and the reset time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from redis.asyncio import Redis

from app.core.errors import TooManyRequests
from app.core.ids import uuid7

# KEYS: the identity's key. ARGV: window (ms), requests, a unique member, "1" to record
# an admitted request ("0" only looks). Returns {admitted, remaining, ms until a slot
# frees}.
_SLIDING_WINDOW = """
local now = redis.call('TIME')
now = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
local admitted = 0
if count < limit then
    admitted = 1
    if ARGV[4] == '1' then
        redis.call('ZADD', KEYS[1], now, ARGV[3])
        redis.call('PEXPIRE', KEYS[1], window)
        count = count + 1
    end
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2]
local reset = window
if oldest then
    reset = tonumber(oldest) + window - now
end
return {admitted, limit - count, reset}
"""


@dataclass(frozen=True, slots=True)
class Limit:
    name: str
    requests: int
    window_seconds: int


@dataclass(frozen=True, slots=True)
class Decision:
    limit: Limit
    admitted: bool
    remaining: int
    reset_seconds: int  # until the oldest counted request leaves the window

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Limit": str(self.limit.requests),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_seconds),
            "RateLimit-Policy": f"{self.limit.requests};w={self.limit.window_seconds}",
        }

    def refuse(self) -> TooManyRequests:
        error = TooManyRequests(
            f"Rate limit of {self.limit.requests} per {self.limit.window_seconds} s reached "
            f"({self.limit.name}); retry after {self.reset_seconds} s",
            retry_after=self.reset_seconds,
        )
        error.headers.update(self.headers())
        return error


class RateLimiter:
    def __init__(self, redis: Redis) -> None:
        self._script = redis.register_script(_SLIDING_WINDOW)

    async def hit(self, limit: Limit, identity: str) -> Decision:
        """Count one request if the limit admits it."""
        return await self._call(limit, identity, record=True)

    async def peek(self, limit: Limit, identity: str) -> Decision:
        """Whether the limit would admit a request, counting nothing."""
        return await self._call(limit, identity, record=False)

    async def _call(self, limit: Limit, identity: str, *, record: bool) -> Decision:
        admitted, remaining, reset_ms = await self._script(
            keys=[f"ratelimit:{limit.name}:{identity}"],
            args=[limit.window_seconds * 1000, limit.requests, uuid7().hex, int(record)],
        )
        return Decision(
            limit=limit,
            admitted=bool(admitted),
            remaining=max(0, int(remaining)),
            reset_seconds=max(1, math.ceil(int(reset_ms) / 1000)),
        )
