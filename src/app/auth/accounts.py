"""What authentication needs to know about an account, cached in Redis.

Every authenticated request checks that its account still exists, is active, has the
role it acts with and has not moved its `token_version` on (a logout everywhere, a new
password). Reading that from PostgreSQL cost each request a pooled connection and four
round trips (ping, BEGIN, SELECT, COMMIT); the read now comes from Redis in the same
round trip as the access token's deny-list check, and a request that needs nothing
else from the database (`GET /items/{id}` served from the item cache) touches no
database at all.

The entry is kept right the way `app.core.cache` keeps items right: it is versioned by
`token_version`, and the newer version always wins. So that every change that matters
moves the version on, a change of role or of `is_active` moves `token_version` on too
(`_privilege_changes_end_tokens`): the account's access tokens issued before the change
are refused, and its refresh token gets one that carries the new role. After a flush
that changed or deleted an account, the new entry (or a tombstone) is stored once the
transaction commits. Entries expire after ACCOUNT_CACHE_SECONDS, which bounds how long
a change made outside the ORM (SQL by hand) or whose cache write failed can go unseen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from redis.asyncio import Redis
from sqlalchemy import event, inspect
from sqlalchemy.orm import Session, UOWTransaction

from app.core.cache import (
    ACCOUNT_CACHE_SLOT,
    Entry,
    VersionedCache,
    forget_after_commit,
    parse_entry,
    store_after_commit,
)
from app.models import Role, User


def account_key(user_id: UUID) -> str:
    return f"cache:account:{user_id}"


@dataclass(frozen=True, slots=True)
class Account:
    """An account as authentication sees it."""

    id: UUID
    role: Role
    is_active: bool
    token_version: int

    @classmethod
    def of(cls, user: User) -> Account:
        return cls(user.id, user.role, user.is_active, user.token_version)

    @classmethod
    def from_entry(cls, user_id: UUID, entry: Entry) -> Account:
        role, _, active = entry.value.partition("|")
        return cls(user_id, Role(role), active == "1", entry.version)

    @property
    def cached_value(self) -> str:
        return f"{self.role.value}|{int(self.is_active)}"


class AccountCache:
    def __init__(self, cache: VersionedCache, redis: Redis) -> None:
        self._cache = cache
        self._redis = redis

    async def lookup(
        self,
        user_id: UUID,
        *,
        revoked_keys: Sequence[str],
        also: dict[str, object] | None = None,
    ) -> tuple[bool, Account | None]:
        """Whether any of `revoked_keys` (an access token's deny-list entries) is set,
        and the cached account (None when not cached): one round trip, which also reads
        the keys of `also` into it (app.core.context.want_from_redis). Redis errors
        propagate: the deny-list cannot be skipped."""
        extra = list(also or ())
        if not self._cache.enabled and not extra:
            return bool(await self._redis.exists(*revoked_keys)), None
        raw, *values = await self._redis.mget(account_key(user_id), *revoked_keys, *extra)
        denied, fetched = values[: len(revoked_keys)], values[len(revoked_keys) :]
        if also is not None:
            also.update(zip(extra, fetched, strict=True))
        entry = parse_entry(raw) if self._cache.enabled else None
        revoked = any(value is not None for value in denied)
        return revoked, None if entry is None else Account.from_entry(user_id, entry)

    async def fill(self, account: Account) -> None:
        """Cache what was read from the database (unless a newer version is there)."""
        await self._cache.store(
            account_key(account.id), account.token_version, account.cached_value
        )


def _changed(user: User, attribute: str) -> bool:
    return bool(inspect(user).attrs[attribute].history.has_changes())


@event.listens_for(Session, "before_flush")
def _privilege_changes_end_tokens(session: Session, _context: UOWTransaction, _: Any) -> None:
    for user in session.dirty:
        if (
            isinstance(user, User)
            and (_changed(user, "role") or _changed(user, "is_active"))
            and not _changed(user, "token_version")
        ):
            user.token_version += 1


@event.listens_for(Session, "after_flush")
def _refresh_cached_accounts(session: Session, _context: UOWTransaction) -> None:
    if ACCOUNT_CACHE_SLOT not in session.info:  # a session of the tests or of a script
        return
    for user in session.deleted:
        if isinstance(user, User):
            forget_after_commit(session, account_key(user.id), slot=ACCOUNT_CACHE_SLOT)
    for user in session.dirty:
        if isinstance(user, User) and _changed(user, "token_version"):
            account = Account.of(user)
            store_after_commit(
                session,
                account_key(user.id),
                account.token_version,
                account.cached_value,
                slot=ACCOUNT_CACHE_SLOT,
            )
