"""Declarative base, the unit of work, and what runs after a commit.

One request (or one job) is one `AsyncSession` and one transaction. `session_scope`
commits once at the end and only then runs the callbacks registered with
`after_commit` (jobs to enqueue, events to publish), so nothing outside the database
ever sees a write that was rolled back. Services and repositories only `flush()`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TypeVar
from uuid import UUID

from sqlalchemy import DateTime, MetaData, func
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from app.core.errors import AppError
from app.core.ids import uuid7

logger = logging.getLogger(__name__)

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: DateTime(timezone=True)}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UUIDPrimaryKey:
    id: Mapped[UUID] = mapped_column(primary_key=True, default=uuid7)


class Timestamps:
    # Set by the application (not fetched back from the server), so an updated row
    # needs no extra round trip and never triggers a lazy load under asyncio.
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        default=utcnow, onupdate=utcnow, server_default=func.now()
    )


Callback = Callable[[], Awaitable[None]]
T = TypeVar("T")
_AFTER_COMMIT_KEY = "after_commit"
_ON_ROLLBACK_KEY = "on_rollback"


def after_commit(session: Session | AsyncSession, callback: Callback) -> None:
    """Run `callback` once the session's transaction has committed; never on rollback.
    (An AsyncSession and its synchronous Session share one `info`: ORM event hooks,
    which see the latter, may register callbacks too.)"""
    session.info.setdefault(_AFTER_COMMIT_KEY, []).append(callback)


def after_commit_batch(
    session: Session | AsyncSession,
    key: str,
    item: T,
    send: Callable[[list[T]], Awaitable[None]],
) -> None:
    """Collect `item` under `key`; once the session commits, `send` gets every item
    collected there, in one call (one round trip for a request's cache entries, events
    or jobs, not one each)."""
    pending: list[T] = session.info.setdefault(key, [])
    if not pending:

        async def flush() -> None:
            await send(session.info.pop(key, []))

        after_commit(session, flush)
    pending.append(item)


def on_rollback(session: AsyncSession, callback: Callback) -> None:
    """Run `callback` when the session's scope ends without committing."""
    session.info.setdefault(_ON_ROLLBACK_KEY, []).append(callback)


async def commit(session: AsyncSession) -> None:
    """Commit, then run every after-commit callback. The write is saved: a callback that
    fails (Redis down, say) is logged and the others still run, so a committed request
    never turns into an error. What must not be lost has its own safety net (the job
    outbox, the cache's versions, a lease that lapses)."""
    await session.commit()
    session.info.pop(_ON_ROLLBACK_KEY, None)
    callbacks: list[Callback] = session.info.pop(_AFTER_COMMIT_KEY, [])
    for callback in callbacks:
        try:
            await callback()
        except Exception:
            logger.exception("after-commit callback failed (the commit stands)")


async def _rolled_back(session: AsyncSession) -> None:
    session.info.pop(_AFTER_COMMIT_KEY, None)
    for callback in session.info.pop(_ON_ROLLBACK_KEY, []):
        try:
            await callback()
        except Exception:  # the original error matters more; this one is logged
            logger.exception("rollback callback failed")


@asynccontextmanager
async def session_scope(
    maker: async_sessionmaker[AsyncSession],
    *,
    info: dict[str, object] | None = None,
) -> AsyncIterator[AsyncSession]:
    """A session whose transaction commits once when the block ends without error.

    An error rolls the transaction back, except an `AppError` whose `keep_writes` is
    set: its writes (and their after-commit callbacks) are committed before it
    propagates.
    """
    async with maker() as session:
        session.info.update(info or {})
        try:
            yield session
        except AppError as exc:
            if not exc.keep_writes:
                await _rolled_back(session)
                raise
            await commit(session)
            raise
        except BaseException:
            await _rolled_back(session)
            raise
        try:
            await commit(session)
        except BaseException:
            await _rolled_back(session)
            raise
