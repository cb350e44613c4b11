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

# One window: drop entries older than `window` ms, admit if fewer than `limit` remain
# (recording the request under `member` when `record` is '1'). Returns {admitted,
# remaining, ms until a slot frees}.
_WINDOW = """
local function window(key, window, limit, member, record)
    local now = redis.call('TIME')
    now = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
    local count = redis.call('ZCARD', key)
    local admitted = 0
    if count < limit then
        admitted = 1
        if record == '1' then
            redis.call('ZADD', key, now, member)
            redis.call('PEXPIRE', key, window)
            count = count + 1
        end
    end
    local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')[2]
    local reset = window
    if oldest then
        reset = tonumber(oldest) + window - now
    end
    return {admitted, limit - count, reset}
end
"""
# KEYS: the identity's key. ARGV: window (ms), requests, a unique member, "1" to record.
_SLIDING_WINDOW = (
    _WINDOW
    + """
return window(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4])
"""
)
# KEYS: a marker, the identity counted when it exists, the one counted otherwise. ARGV:
# window (ms), requests for each of the two, a unique member. Returns the window's
# answer and 1 when the marker existed.
_SLIDING_WINDOW_IF_KNOWN = (
    _WINDOW
    + """
local known = redis.call('EXISTS', KEYS[1])
local answer
if known == 1 then
    answer = window(KEYS[2], tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[4], '1')
else
    answer = window(KEYS[3], tonumber(ARGV[1]), tonumber(ARGV[3]), ARGV[4], '1')
end
table.insert(answer, known)
return answer
"""
)


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
        self._if_known_script = redis.register_script(_SLIDING_WINDOW_IF_KNOWN)

    async def hit(self, limit: Limit, identity: str) -> Decision:
        """Count one request if the limit admits it."""
        return await self._call(limit, identity, record=True)

    async def peek(self, limit: Limit, identity: str) -> Decision:
        """Whether the limit would admit a request, counting nothing."""
        return await self._call(limit, identity, record=False)

    async def hit_if_known(
        self, marker: str, known: tuple[Limit, str], otherwise: tuple[Limit, str]
    ) -> tuple[Decision, bool]:
        """Count one request under `known` when the Redis key `marker` exists, else under
        `otherwise` (one round trip); the decision and whether the marker existed. Both
        limits must share one window."""
        (limit, identity), (fallback, fallback_identity) = known, otherwise
        assert limit.window_seconds == fallback.window_seconds
        *answer, existed = await self._if_known_script(
            keys=[marker, _key(limit, identity), _key(fallback, fallback_identity)],
            args=[limit.window_seconds * 1000, limit.requests, fallback.requests, uuid7().hex],
        )
        return _decision(limit if existed else fallback, answer), bool(existed)

    async def _call(self, limit: Limit, identity: str, *, record: bool) -> Decision:
        answer = await self._script(
            keys=[_key(limit, identity)],
            args=[limit.window_seconds * 1000, limit.requests, uuid7().hex, int(record)],
        )
        return _decision(limit, answer)


def _key(limit: Limit, identity: str) -> str:
    return f"ratelimit:{limit.name}:{identity}"


def _decision(limit: Limit, answer: list[int]) -> Decision:
    admitted, remaining, reset_ms = answer
    return Decision(
        limit=limit,
        admitted=bool(admitted),
        remaining=max(0, int(remaining)),
        reset_seconds=max(1, math.ceil(int(reset_ms) / 1000)),
    )
