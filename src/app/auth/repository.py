"""Every query on refresh tokens and password-reset tokens."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from sqlalchemy import delete, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import utcnow
from app.models import PasswordResetToken, RefreshToken


async def add_refresh_token(
    session: AsyncSession, *, token_id: UUID, user_id: UUID, family_id: UUID, expires_at: datetime
) -> None:
    session.add(
        RefreshToken(id=token_id, user_id=user_id, family_id=family_id, expires_at=expires_at)
    )
    await session.flush()


async def get_refresh_token_for_update(
    session: AsyncSession, token_id: UUID
) -> RefreshToken | None:
    # FOR UPDATE: two refreshes with one token are serialised, so exactly one wins
    # and the other is seen as reuse.
    statement = select(RefreshToken).where(RefreshToken.id == token_id).with_for_update()
    return await session.scalar(statement)


async def revoke_refresh_family(session: AsyncSession, family_id: UUID) -> None:
    await session.execute(
        update(RefreshToken)
        .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


async def revoke_all_refresh_tokens(session: AsyncSession, user_id: UUID) -> None:
    await session.execute(
        update(RefreshToken)
        .where(RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


async def store_reset_token(
    session: AsyncSession, *, user_id: UUID, job_id: str, token_hash: str, expires_at: datetime
) -> None:
    """The token of mail job `job_id`: a job that runs again replaces its own unused token
    (the first link it mailed, if any, stops working), never adds a second one."""
    statement = insert(PasswordResetToken).values(
        user_id=user_id, job_id=job_id, token_hash=token_hash, expires_at=expires_at
    )
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[PasswordResetToken.job_id],
            set_={"token_hash": token_hash, "expires_at": expires_at},
            where=PasswordResetToken.used_at.is_(None),
        )
    )


async def get_reset_token(session: AsyncSession, token_hash: str) -> PasswordResetToken | None:
    statement = select(PasswordResetToken).where(PasswordResetToken.token_hash == token_hash)
    return await session.scalar(statement)


async def spend_reset_token(session: AsyncSession, *, user_id: UUID, token_hash: str) -> bool:
    """Spend the token and every other unused one of the account in one statement (so two
    resets never hold one row each while waiting for the other's); False when the token
    was already spent, by a concurrent reset included."""
    now = utcnow()
    spent = await session.execute(
        update(PasswordResetToken)
        .where(
            PasswordResetToken.user_id == user_id,
            PasswordResetToken.used_at.is_(None),
        )
        .values(used_at=now)
        .returning(PasswordResetToken.token_hash, PasswordResetToken.expires_at)
    )
    return any(row.token_hash == token_hash and row.expires_at > now for row in spent.all())


async def delete_expired_tokens(session: AsyncSession, *, before: datetime) -> tuple[int, int]:
    refresh = await session.execute(delete(RefreshToken).where(RefreshToken.expires_at < before))
    reset = await session.execute(
        delete(PasswordResetToken).where(
            or_(PasswordResetToken.expires_at < before, PasswordResetToken.used_at.is_not(None))
        )
    )
    return refresh.rowcount, reset.rowcount  # type: ignore[attr-defined]
