"""The credential a long-lived connection (SSE, WebSocket) was opened with, and the
check that it still stands: a stream must end when its key is deleted, its token is
logged out or outdated, or its account is deactivated, deleted or (for `scope=all`)
no longer an admin's, not when the token would have expired anyway."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from uuid import UUID

from redis.asyncio import Redis
from sqlalchemy import select

from app.core.db import utcnow
from app.core.resources import Resources
from app.models import ApiKey, Role, User


def revoked_access_key(jti: str) -> str:
    """The Redis key that marks an access token as logged out until it expires."""
    return f"auth:revoked-access:{jti}"


@dataclass(frozen=True, slots=True)
class Credential:
    user_id: UUID
    # An access token: its jti and the account's token version it was valid for.
    token_id: str | None = None
    token_version: int | None = None
    # Or an API key.
    api_key_id: UUID | None = None
    # Subscribed to every user's events, which needs the admin role.
    everything: bool = False


async def _logged_out(redis: Redis, token_ids: list[str]) -> set[str]:
    if not token_ids:
        return set()
    async with redis.pipeline(transaction=False) as pipe:
        for token_id in token_ids:
            pipe.exists(revoked_access_key(token_id))
        answers = await pipe.execute()
    return {token_id for token_id, exists in zip(token_ids, answers, strict=True) if exists}


async def revoked(resources: Resources, credentials: Iterable[Credential]) -> set[Credential]:
    """Those of `credentials` that no longer stand, in one query per table and one
    Redis round trip."""
    credentials = list(credentials)
    if not credentials:
        return set()
    key_ids = {c.api_key_id for c in credentials if c.api_key_id is not None}
    async with resources.session() as session:
        users = {
            row.id: row
            for row in await session.execute(
                select(User.id, User.is_active, User.token_version, User.role).where(
                    User.id.in_({c.user_id for c in credentials})
                )
            )
        }
        keys = (
            dict(
                (
                    await session.execute(
                        select(ApiKey.id, ApiKey.expires_at).where(ApiKey.id.in_(key_ids))
                    )
                )
                .tuples()
                .all()
            )
            if key_ids
            else {}
        )
    logged_out = await _logged_out(
        resources.redis, [c.token_id for c in credentials if c.token_id is not None]
    )
    now = utcnow()
    gone = set()
    for credential in credentials:
        user = users.get(credential.user_id)
        if (
            user is None
            or not user.is_active
            or (credential.everything and user.role != Role.admin)
        ):
            gone.add(credential)
        elif credential.api_key_id is not None:
            if credential.api_key_id not in keys:
                gone.add(credential)
            else:
                expires_at = keys[credential.api_key_id]
                if expires_at is not None and expires_at <= now:
                    gone.add(credential)
        elif credential.token_version != user.token_version or credential.token_id in logged_out:
            gone.add(credential)
    return gone
