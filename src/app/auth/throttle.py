"""Failed-login throttling in Redis, shared by every API process.

Counted per (account, client address), so a guesser is stopped without letting anyone
lock a victim out from elsewhere, and per client address, so one address cannot spray
many accounts. The check runs before the password is verified: a throttled client costs
no argon2 work.
"""

from __future__ import annotations

from redis.asyncio import Redis

from app.core.config import AuthSettings
from app.core.errors import TooManyRequests
from app.core.security import sha256_hex


class LoginThrottle:
    def __init__(self, redis: Redis, settings: AuthSettings) -> None:
        self._redis = redis
        self._settings = settings

    def _keys(self, email: str, address: str) -> tuple[str, str]:
        account = sha256_hex(email)[:32]
        return f"auth:login-failures:{account}:{address}", f"auth:login-failures:{address}"

    async def check(self, email: str, address: str) -> None:
        pair_key, address_key = self._keys(email, address)
        pair, per_address = await self._redis.mget(pair_key, address_key)
        for key, count, limit in (
            (pair_key, pair, self._settings.login_max_failures),
            (address_key, per_address, self._settings.login_max_failures_per_address),
        ):
            if count is not None and int(count) >= limit:
                retry_after = await self._redis.ttl(key)
                raise TooManyRequests(
                    "Too many failed login attempts; try again later",
                    retry_after=retry_after if retry_after > 0 else 1,
                )

    async def failed(self, email: str, address: str) -> None:
        window = self._settings.login_failure_window_seconds
        async with self._redis.pipeline(transaction=True) as pipe:
            for key in self._keys(email, address):
                pipe.set(key, 0, ex=window, nx=True)
                pipe.incr(key)
            await pipe.execute()

    async def succeeded(self, email: str, address: str) -> None:
        pair_key, _ = self._keys(email, address)
        await self._redis.delete(pair_key)
