"""Rules for user accounts: self-service and administration."""

from __future__ import annotations

import logging
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth import repository as auth_repository
from app.auth.service import AuthKit
from app.auth.throttle import LoginThrottle
from app.core.db import after_commit, session_scope
from app.core.errors import Conflict, Forbidden, NotFound, Unauthorized
from app.core.pagination import Paged, PageParams
from app.core.security import PasswordHasher
from app.core.storage import Storage
from app.files import repository as file_repository
from app.items import events as item_events
from app.items import repository as item_repository
from app.jobs import repository as job_repository
from app.models import Role, User
from app.users import repository
from app.users.schemas import UserAdminUpdate, UserUpdateMe

logger = logging.getLogger(__name__)


async def get(session: AsyncSession, user_id: UUID) -> User:
    user = await repository.get(session, user_id)
    if user is None:
        raise NotFound("User not found")
    return user


async def list_page(session: AsyncSession, *, page: PageParams) -> Paged[User]:
    return await repository.page(session, page)


async def update_me(
    session: AsyncSession,
    account_id: UUID,
    *,
    maker: async_sessionmaker[AsyncSession],
    data: UserUpdateMe,
    kit: AuthKit,
    client_address: str,
) -> User:
    changes = data.model_dump(exclude_unset=True)
    if data.current_password is None:  # no password to check, none to hash (schemas)
        user = await active(session, account_id)
        await _apply(session, user, changes, hashed_password=None)
        return user
    # The password work (a verification, a new hash) comes before the request's session
    # takes a pooled connection, as a login's does (app.auth.service).
    before = await confirm_password(
        maker, account_id, data.current_password, kit=kit, client_address=client_address
    )
    hashed_password = await _new_hash(changes, kit.passwords)
    user = await _unchanged_since(session, before)
    await _apply(session, user, changes, hashed_password=hashed_password)
    return user


async def confirm_password(
    maker: async_sessionmaker[AsyncSession],
    account_id: UUID,
    current_password: str,
    *,
    kit: AuthKit,
    client_address: str,
) -> User:
    """The caller's account, once `current_password` proves it is theirs: what a stolen
    access token alone cannot give. Wrong guesses are throttled like logins."""
    async with session_scope(maker) as reading:
        before = await active(reading, account_id)
    throttle = LoginThrottle(kit.redis, kit.settings.auth)
    await throttle.reserve(before.email, client_address)
    if not await kit.passwords.verify(before.hashed_password, current_password):
        raise Forbidden("The current password is incorrect")
    await throttle.succeeded(before.email, client_address)
    return before


async def _unchanged_since(session: AsyncSession, before: User) -> User:
    """The account again, in the request's session, whose password must still be the one
    `confirm_password` checked (a concurrent change would make the check stale)."""
    user = await active(session, before.id)
    if user.hashed_password != before.hashed_password:
        raise Conflict("The password was changed meanwhile; send the request again")
    return user


async def active(session: AsyncSession, account_id: UUID) -> User:
    """The caller's account, which must still exist and be active."""
    user = await repository.get(session, account_id)
    if user is None or not user.is_active:
        raise Unauthorized("This access token is no longer valid")
    return user


async def _new_hash(changes: dict[str, object], passwords: PasswordHasher) -> str | None:
    password = changes.pop("password", None)
    return await passwords.hash(password) if isinstance(password, str) else None


async def delete_me(
    session: AsyncSession,
    account_id: UUID,
    *,
    maker: async_sessionmaker[AsyncSession],
    current_password: str,
    kit: AuthKit,
    client_address: str,
    storage: Storage,
) -> None:
    before = await confirm_password(
        maker, account_id, current_password, kit=kit, client_address=client_address
    )
    user = await _unchanged_since(session, before)
    await _keep_an_admin(session, user)
    await _delete(session, user, storage=storage)


async def update(
    session: AsyncSession,
    user_id: UUID,
    *,
    data: UserAdminUpdate,
    passwords: PasswordHasher,
) -> User:
    changes = data.model_dump(exclude_unset=True)
    # Hashed before the account is read, so no pooled connection waits for argon2.
    hashed_password = await _new_hash(changes, passwords)
    user = await get(session, user_id)
    if changes.get("role", Role.admin) != Role.admin or changes.get("is_active") is False:
        await _keep_an_admin(session, user)
    await _apply(session, user, changes, hashed_password=hashed_password)
    if changes.get("is_active") is False:
        # The access tokens already ended with the change (app.auth.accounts moves
        # token_version on); the refresh tokens go too.
        await auth_repository.revoke_all_refresh_tokens(session, user.id)
    return user


async def delete(session: AsyncSession, user_id: UUID, *, storage: Storage) -> None:
    user = await get(session, user_id)
    await _keep_an_admin(session, user)
    await _delete(session, user, storage=storage)


async def _delete(session: AsyncSession, user: User, *, storage: Storage) -> None:
    """Delete the account and everything it owns: its rows go with it (ON DELETE
    CASCADE); once that commits, their cached copies are forgotten and the bytes of its
    files and exports are removed. The account row is locked first: an item written at
    the same moment either commits before (and is deleted with the rest) or waits and
    fails on its missing owner, so no row and no cached copy outlives the account."""
    await session.refresh(user, with_for_update=True)
    item_events.forget(session, await item_repository.ids_of(session, user.id))
    keys = [
        *await file_repository.storage_keys_of(session, user.id),
        *await job_repository.file_keys_of(session, user.id),
    ]
    await repository.delete(session, user)

    async def delete_bytes() -> None:
        for key in keys:
            try:
                await storage.delete(key)
            except OSError:  # one stuck file must not keep the others
                logger.exception("could not delete %s of a deleted account", key)

    after_commit(session, delete_bytes)


async def _apply(
    session: AsyncSession,
    user: User,
    changes: dict[str, object],
    *,
    hashed_password: str | None,
) -> None:
    """`changes` without the password, whose new hash is `hashed_password`."""
    changes.pop("current_password", None)
    email = changes.get("email")
    if (
        isinstance(email, str)
        and email != user.email
        and await repository.email_taken(session, email, except_id=user.id)
    ):
        raise Conflict("This email is already registered")
    if hashed_password is not None:
        user.hashed_password = hashed_password
        await _end_sessions(session, user)
    for field, value in changes.items():
        setattr(user, field, value)
    await session.flush()


async def _end_sessions(session: AsyncSession, user: User) -> None:
    """Invalidate every access token (via token_version) and refresh token of `user`."""
    user.token_version += 1
    await auth_repository.revoke_all_refresh_tokens(session, user.id)


async def _keep_an_admin(session: AsyncSession, user: User) -> None:
    """Refuse to let `user` stop being an active admin if they are the last one."""
    if user.role != Role.admin or not user.is_active:
        return
    admins = await repository.lock_active_admins(session)
    if all(admin_id == user.id for admin_id in admins):
        raise Conflict("The last active admin cannot be removed, demoted or deactivated")
