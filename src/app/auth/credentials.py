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


def revoked_family_key(family_id: str) -> str:
    """The Redis key that marks every access token of a sign-in (the tokens issued from
    one login and its refreshes, claim `fam`) as revoked until the last one expires."""
    return f"auth:revoked-family:{family_id}"


def deny_list_keys(token_id: str, family_id: str | None) -> list[str]:
    """The deny-list entries that would each revoke an access token."""
    keys = [revoked_access_key(token_id)]
    if family_id is not None:
        keys.append(revoked_family_key(family_id))
    return keys


@dataclass(frozen=True, slots=True)
class Credential:
    user_id: UUID
    # An access token: its jti and the account's token version it was valid for.
    token_id: str | None = None
    token_version: int | None = None
    family_id: str | None = None
    # Or an API key.
    api_key_id: UUID | None = None
    # Subscribed to every user's events, which needs the admin role.
    everything: bool = False


async def _logged_out(redis: Redis, tokens: list[Credential]) -> set[Credential]:
    """The access-token credentials on the deny-list (their token or their sign-in)."""
    if not tokens:
        return set()
    async with redis.pipeline(transaction=False) as pipe:
        for credential in tokens:
            assert credential.token_id is not None
            pipe.exists(*deny_list_keys(credential.token_id, credential.family_id))
        answers = await pipe.execute()
    return {credential for credential, found in zip(tokens, answers, strict=True) if found}


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
        resources.redis, [c for c in credentials if c.token_id is not None]
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
        elif credential.token_version != user.token_version or credential in logged_out:
            gone.add(credential)
    return gone
