"""A read-through cache in Redis for versioned objects, kept right by their writes.

Each entry holds an object's version with its value. Writes are version-checked in one
Lua call, so the newer version always wins whoever writes last:
- a reader that missed fills the entry with what it read from the database;
- a committed write stores its new version (registered with `store_after_commit`, so a
  rolled-back write never reaches the cache);
- a deletion leaves a tombstone that no fill can overwrite until it expires.
A reader that loaded version 1 just before a writer committed version 2 can therefore
never put version 1 back. Entries expire after `ttl_seconds`, which bounds how long an
entry may outlive a write whose cache update failed (Redis down at that moment). Redis
errors on reads only cost a trip to the database.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from app.core.db import after_commit_batch
from app.core.observability import REDIS_ERRORS

logger = logging.getLogger(__name__)

CACHE_INFO_KEY = "cache"
ACCOUNT_CACHE_SLOT = "account_cache"  # app.auth.accounts
_PENDING_KEY = "pending_cache_writes"
TOMBSTONE_VERSION = 2**53  # newer than any real version: deletion wins
STORE_BATCH = 1000

# KEYS: the entry. ARGV: version, value, ttl (s). Stores "<version>|<value>" unless the
# entry holds the same or a newer version; 1 when stored.
_STORE_IF_NEWER = """
local current = redis.call('GET', KEYS[1])
if current then
    local version = tonumber(string.match(current, '^(%d+)|'))
    if version and version >= tonumber(ARGV[1]) then
        return 0
    end
end
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. ARGV[2], 'EX', ARGV[3])
return 1
"""


@dataclass(frozen=True, slots=True)
class Entry:
    version: int
    value: str


def parse_entry(raw: str | None) -> Entry | None:
    """An entry as stored (`<version>|<value>`); None for a miss or a tombstone."""
    if raw is None:
        return None
    version, _, value = raw.partition("|")
    if int(version) >= TOMBSTONE_VERSION:
        return None
    return Entry(int(version), value)


class VersionedCache:
    def __init__(self, redis: Redis, *, ttl_seconds: int) -> None:
        self._redis = redis
        self._store = redis.register_script(_STORE_IF_NEWER)
        self.ttl_seconds = ttl_seconds

    @property
    def enabled(self) -> bool:
        return self.ttl_seconds > 0

    async def get(self, key: str) -> Entry | None:
        """The cached entry; None on a miss, a tombstone or a Redis error."""
        if not self.enabled:
            return None
        try:
            raw: str | None = await self._redis.get(key)
        except (RedisError, OSError) as exc:
            REDIS_ERRORS.labels("cache").inc()
            logger.warning("cache read failed, using the database: %s", exc)
            return None
        return parse_entry(raw)

    async def get_many(self, keys: Sequence[str]) -> list[Entry | None]:
        """`get` for many keys in one round trip (all misses on a Redis error)."""
        if not self.enabled or not keys:
            return [None] * len(keys)
        try:
            raws: list[str | None] = await self._redis.mget(keys)
        except (RedisError, OSError) as exc:
            REDIS_ERRORS.labels("cache").inc()
            logger.warning("cache read failed, using the database: %s", exc)
            return [None] * len(keys)
        return [parse_entry(raw) for raw in raws]

    async def store(self, key: str, version: int, value: str) -> None:
        """Keep `value` as `version` unless the entry is already as new (best effort)."""
        if not self.enabled:
            return
        try:
            await self._store(keys=[key], args=[version, value, self.ttl_seconds])
        except (RedisError, OSError) as exc:
            REDIS_ERRORS.labels("cache").inc()
            logger.warning("cache write failed: %s", exc)

    async def store_many(self, entries: list[tuple[str, int, str]]) -> None:
        """`store` for many entries, a thousand per round trip (best effort)."""
        if not self.enabled:
            return
        try:
            for start in range(0, len(entries), STORE_BATCH):
                async with self._redis.pipeline(transaction=False) as pipe:
                    for key, version, value in entries[start : start + STORE_BATCH]:
                        await self._store(
                            keys=[key], args=[version, value, self.ttl_seconds], client=pipe
                        )
                    await pipe.execute()
        except (RedisError, OSError) as exc:
            REDIS_ERRORS.labels("cache").inc()
            logger.warning("cache write failed: %s", exc)

    async def forget(self, key: str) -> None:
        await self.store(key, TOMBSTONE_VERSION, "")


def cache_info(cache: VersionedCache, *, slot: str = CACHE_INFO_KEY) -> dict[str, object]:
    """`session_scope(..., info=cache_info(cache))`: lets the session update the cache
    (one `slot` per cache when a session updates several)."""
    return {slot: cache}


def store_after_commit(
    session: Session | AsyncSession,
    key: str,
    version: int,
    value: str,
    *,
    slot: str = CACHE_INFO_KEY,
) -> None:
    """Store (or, with TOMBSTONE_VERSION, forget) the entry once the session commits."""
    cache = session.info.get(slot)
    if not isinstance(cache, VersionedCache):
        msg = f"this session was not opened with session_scope(..., info=cache_info(..., {slot=}))"
        raise TypeError(msg)
    entry = (key, version, value)
    after_commit_batch(session, f"{_PENDING_KEY}:{slot}", entry, functools.partial(_flush, cache))


def forget_after_commit(
    session: Session | AsyncSession, key: str, *, slot: str = CACHE_INFO_KEY
) -> None:
    """Leave a tombstone for the entry once the session commits (a deletion)."""
    store_after_commit(session, key, TOMBSTONE_VERSION, "", slot=slot)


async def _flush(cache: VersionedCache, pending: list[tuple[str, int, str]]) -> None:
    if len(pending) == 1:
        await cache.store(*pending[0])
    elif pending:
        await cache.store_many(pending)
