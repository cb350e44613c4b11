"""Password-guessing throttle in Redis, shared by every API process.

Attempts are counted per (account, client address), so a guesser is stopped without
letting anyone lock a victim out from elsewhere, and per client address, so one address
cannot spray many accounts. An attempt is counted *before* its password is verified, in
one atomic step, so parallel requests cannot slip past the limit, and a refused attempt
costs no argon2 work. A success clears the account's count.
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
        return f"auth:attempts:{account}:{address}", f"auth:attempts:{address}"

    async def reserve(self, email: str, address: str) -> None:
        """Count one attempt; 429 (with Retry-After) once a limit is passed."""
        pair_key, address_key = self._keys(email, address)
        window = self._settings.login_failure_window_seconds
        async with self._redis.pipeline(transaction=True) as pipe:
            for key in (pair_key, address_key):
                pipe.set(key, 0, ex=window, nx=True)
                pipe.incr(key)
                pipe.ttl(key)
            _, pair, pair_ttl, _, per_address, address_ttl = await pipe.execute()
        if pair > self._settings.login_max_failures:
            retry_after = pair_ttl
        elif per_address > self._settings.login_max_failures_per_address:
            retry_after = address_ttl
        else:
            return
        raise TooManyRequests(
            "Too many failed attempts; try again later",
            retry_after=retry_after if retry_after > 0 else window,
        )

    async def succeeded(self, email: str, address: str) -> None:
        pair_key, address_key = self._keys(email, address)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(pair_key)
            pipe.decr(address_key)
            await pipe.execute()
