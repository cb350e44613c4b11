"""Every query on API keys."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from uuid import UUID

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import ApiKey, User


async def add(session: AsyncSession, key: ApiKey) -> None:
    session.add(key)
    await session.flush()


async def count_of(session: AsyncSession, user_id: UUID) -> int:
    """How many keys the user holds, their account row locked until the transaction
    ends: concurrent creates are counted one after the other, so the cap holds."""
    await session.execute(select(User.id).where(User.id == user_id).with_for_update())
    statement = select(func.count()).select_from(ApiKey).where(ApiKey.user_id == user_id)
    return int(await session.scalar(statement) or 0)


async def of_user(session: AsyncSession, user_id: UUID) -> Sequence[ApiKey]:
    statement = select(ApiKey).where(ApiKey.user_id == user_id).order_by(ApiKey.id.desc())
    return (await session.scalars(statement)).all()


async def with_owner(session: AsyncSession, prefix: str) -> tuple[ApiKey, User] | None:
    """The key with this prefix and its owner, in one round trip."""
    statement = (
        select(ApiKey, User).join(User, User.id == ApiKey.user_id).where(ApiKey.prefix == prefix)
    )
    row = (await session.execute(statement)).first()
    return None if row is None else (row[0], row[1])


async def delete_of(session: AsyncSession, key_id: UUID, user_id: UUID) -> bool:
    """Delete the key if `user_id` owns it; False when there was none to delete (another
    user's, or one a concurrent request deleted first)."""
    deleted = await session.scalar(
        delete(ApiKey).where(ApiKey.id == key_id, ApiKey.user_id == user_id).returning(ApiKey.id)
    )
    return deleted is not None


async def mark_used(session: AsyncSession, key_id: UUID, *, now: datetime) -> None:
    await session.execute(
        update(ApiKey)
        .where(
            ApiKey.id == key_id,
            or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < now - timedelta(minutes=1)),
        )
        .values(last_used_at=now)
    )
