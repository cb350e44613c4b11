"""Personal API keys: create (shown once), list, revoke, and authenticate with one."""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Sequence
from datetime import timedelta
from uuid import UUID

from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from app.api_keys import repository
from app.api_keys.schemas import ApiKeyCreate
from app.auth.accounts import Account
from app.auth.scopes import Scope
from app.auth.service import Principal
from app.core.db import utcnow
from app.core.errors import Conflict, Forbidden, NotFound, Unauthorized
from app.core.resources import Resources
from app.core.security import sha256_hex
from app.models import ApiKey, Role, User

logger = logging.getLogger(__name__)

KEY_PREFIX = "ak"
MAX_KEYS_PER_USER = 20
# How long a key-authenticated stream may stay open, for keys that never expire.
STREAM_LIFETIME = timedelta(hours=24)
_INVALID = "Invalid API key"


def _new_key() -> tuple[str, str, str]:
    """A new key, its prefix and the hash of its secret."""
    prefix = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return f"{KEY_PREFIX}_{prefix}_{secret}", prefix, sha256_hex(secret)


async def create(session: AsyncSession, owner: User, *, data: ApiKeyCreate) -> tuple[ApiKey, str]:
    if Scope.admin in data.scopes and owner.role != Role.admin:
        raise Forbidden("Only admins may create keys with the admin scope")
    if await repository.count_of(session, owner.id) >= MAX_KEYS_PER_USER:
        raise Conflict(f"At most {MAX_KEYS_PER_USER} API keys per account; delete one first")
    key, prefix, secret_hash = _new_key()
    expires_at = utcnow() + timedelta(days=data.expires_in_days) if data.expires_in_days else None
    api_key = ApiKey(
        user_id=owner.id,
        name=data.name,
        prefix=prefix,
        secret_hash=secret_hash,
        scopes=[scope.value for scope in data.scopes],
        expires_at=expires_at,
    )
    await repository.add(session, api_key)
    return api_key, key


async def list_for(session: AsyncSession, owner: User) -> Sequence[ApiKey]:
    return await repository.of_user(session, owner.id)


async def delete(session: AsyncSession, owner: User, key_id: UUID) -> None:
    if not await repository.delete_of(session, key_id, owner.id):
        raise NotFound("API key not found")


async def authenticate(session: AsyncSession, presented: str) -> Principal:
    """The principal of a presented key: it exists, its secret matches (constant time),
    it has not expired, and its owner is active."""
    marker, _, rest = presented.partition("_")
    prefix, _, secret = rest.partition("_")
    if marker != KEY_PREFIX or not prefix or not secret:
        raise Unauthorized(_INVALID)
    found = await repository.with_owner(session, prefix)
    if found is None or not hmac.compare_digest(found[0].secret_hash, sha256_hex(secret)):
        raise Unauthorized(_INVALID)
    api_key, user = found
    now = utcnow()
    if api_key.expires_at is not None and api_key.expires_at <= now:
        raise Unauthorized("This API key has expired")
    if not user.is_active:
        raise Unauthorized(_INVALID)
    return Principal(
        account=Account.of(user),
        token_id=f"api-key:{api_key.id}",
        token_expires_at=api_key.expires_at or now + STREAM_LIFETIME,
        scopes=frozenset(api_key.scopes),
        api_key_id=api_key.id,
    )


async def mark_used(resources: Resources, key_id: UUID) -> None:
    """Note when a key was last used, at most once a minute per key. Run after the
    response (BackgroundTasks): a few lost updates cost nothing, a queue would be
    overkill, and the request does not wait for the write."""
    try:
        if not await resources.redis.set(f"api-key:used:{key_id}", "1", nx=True, ex=60):
            return
        async with resources.session() as session:
            await repository.mark_used(session, key_id, now=utcnow())
    except (RedisError, OSError, DBAPIError) as exc:
        logger.warning("last use of API key %s not recorded: %s", key_id, exc)
