"""Every query on `users`."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.pagination import Paged, PageParams, paginate
from app.models import Role, User


async def get(session: AsyncSession, user_id: UUID) -> User | None:
    return await session.get(User, user_id)


async def get_by_email(session: AsyncSession, email: str) -> User | None:
    return await session.scalar(select(User).where(User.email == email))


async def insert_new(
    session: AsyncSession,
    *,
    email: str,
    hashed_password: str,
    full_name: str | None = None,
    role: Role = Role.user,
) -> User | None:
    """Insert a user; None when the email is taken (also under concurrent inserts)."""
    statement = (
        insert(User)
        .values(email=email, hashed_password=hashed_password, full_name=full_name, role=role)
        .on_conflict_do_nothing(index_elements=[User.email])
        .returning(User)
    )
    return await session.scalar(statement)


async def email_taken(session: AsyncSession, email: str, *, except_id: UUID) -> bool:
    found = await session.scalar(
        select(func.count()).select_from(User).where(User.email == email, User.id != except_id)
    )
    return bool(found)


async def lock_active_admins(session: AsyncSession) -> Sequence[UUID]:
    """Ids of the active admins, row-locked so two admins cannot demote each other at once."""
    statement = (
        select(User.id).where(User.role == Role.admin, User.is_active.is_(True)).with_for_update()
    )
    return (await session.scalars(statement)).all()


async def page(session: AsyncSession, page: PageParams) -> Paged[User]:
    return await paginate(session, select(User), key=User.id, page=page)


async def delete(session: AsyncSession, user: User) -> None:
    await session.delete(user)
    await session.flush()
