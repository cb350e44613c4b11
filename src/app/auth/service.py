"""Registration, tokens (issue, rotate, revoke) and password recovery."""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth import repository
from app.auth.accounts import Account, AccountCache
from app.auth.actor import Actor
from app.auth.credentials import (
    Credential,
    deny_list_keys,
    revoked_access_key,
    revoked_family_key,
)
from app.auth.schemas import RegisterRequest, TokenPair
from app.auth.scopes import EVERY_SCOPE
from app.auth.throttle import LoginThrottle
from app.core.config import Settings
from app.core.db import after_commit, session_scope, utcnow
from app.core.errors import Conflict, Forbidden, Unauthorized
from app.core.ids import uuid7
from app.core.jobs import enqueue_after_commit
from app.core.mail import EmailMessage
from app.core.resources import Resources
from app.core.security import (
    InvalidTokenError,
    PasswordHasher,
    TokenCodec,
    TokenType,
    sha256_hex,
)
from app.models import User
from app.users import repository as user_repository
from app.users.schemas import normalize_email

logger = logging.getLogger(__name__)

SEND_PASSWORD_RESET = "auth.send_password_reset"  # noqa: S105 - a job name
SEND_WELCOME_EMAIL = "auth.send_welcome_email"
_INVALID_CREDENTIALS = "Incorrect email or password"
# The deny-list entry of a sign-in outlives its tokens by this much (seconds).
_CLOCK_SKEW = 60


class RefreshTokenReused(Unauthorized):
    # Keep the family revocation although the request fails.
    keep_writes = True
    code = "refresh-token-reused"


@dataclass(frozen=True, slots=True)
class AuthKit:
    """What the auth rules need besides the session, built from `Resources`."""

    settings: Settings
    passwords: PasswordHasher
    tokens: TokenCodec
    redis: Redis
    accounts: AccountCache

    @classmethod
    def from_resources(cls, resources: Resources) -> AuthKit:
        return cls(
            resources.settings,
            resources.passwords,
            resources.tokens,
            resources.redis,
            AccountCache(resources.accounts, resources.redis),
        )


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller and the credential they presented: an access token
    (every scope; `token_id` is its jti) or an API key (its scopes; `api_key_id`)."""

    account: Account
    token_id: str
    token_expires_at: datetime
    scopes: frozenset[str] = EVERY_SCOPE
    api_key_id: UUID | None = None
    # The sign-in (refresh token family) an access token was issued for.
    family_id: str | None = None

    @property
    def actor(self) -> Actor:
        return Actor(id=self.account.id, role=self.account.role, scopes=self.scopes)

    def credential(self, *, everything: bool = False) -> Credential:
        """What a stream opened by this caller is re-checked against while it lives."""
        if self.api_key_id is not None:
            return Credential(self.account.id, api_key_id=self.api_key_id, everything=everything)
        return Credential(
            self.account.id,
            token_id=self.token_id,
            token_version=self.account.token_version,
            family_id=self.family_id,
            everything=everything,
        )


async def _user_by_email(maker: async_sessionmaker[AsyncSession], email: str) -> User | None:
    """Read in a short session of its own, before a password is hashed or verified: the
    request's session takes a pooled connection only after the hash. (Holding one
    while waiting for a hashing thread, a storm of logins took the whole pool, and every
    other request that needed the database waited behind them.)"""
    async with session_scope(maker) as reading:
        return await user_repository.get_by_email(reading, email)


async def register(
    session: AsyncSession,
    *,
    maker: async_sessionmaker[AsyncSession],
    data: RegisterRequest,
    kit: AuthKit,
) -> User:
    if await _user_by_email(maker, data.email) is not None:
        raise Conflict("This email is already registered")
    hashed_password = await kit.passwords.hash(data.password)
    user = await user_repository.insert_new(
        session, email=data.email, hashed_password=hashed_password, full_name=data.full_name
    )
    if user is None:  # lost a race with a concurrent registration of the same email
        raise Conflict("This email is already registered")
    enqueue_after_commit(
        session, SEND_WELCOME_EMAIL, str(user.id), job_id=f"{SEND_WELCOME_EMAIL}:{user.id}"
    )
    return user


async def login(
    session: AsyncSession,
    *,
    maker: async_sessionmaker[AsyncSession],
    email: str,
    password: str,
    client_address: str,
    kit: AuthKit,
) -> TokenPair:
    email = normalize_email(email)
    throttle = LoginThrottle(kit.redis, kit.settings.auth)
    await throttle.reserve(email, client_address)
    found = await _user_by_email(maker, email)
    if found is None:
        await kit.passwords.verify_dummy(password)
        raise Unauthorized(_INVALID_CREDENTIALS)
    if not await kit.passwords.verify(found.hashed_password, password):
        raise Unauthorized(_INVALID_CREDENTIALS)
    # Read again in the request's session, which writes: the account may have been
    # deleted, or its password changed, while the password was being verified.
    user = await user_repository.get(session, found.id)
    if user is None or user.hashed_password != found.hashed_password:
        raise Unauthorized(_INVALID_CREDENTIALS)
    if not user.is_active:
        raise Forbidden("This account is disabled")
    if kit.passwords.needs_rehash(user.hashed_password):
        user.hashed_password = await kit.passwords.hash(password)
    await throttle.succeeded(email, client_address)
    return await _issue_pair(session, user, family_id=uuid7(), kit=kit)


async def refresh(session: AsyncSession, *, refresh_token: str, kit: AuthKit) -> TokenPair:
    token_id, user_id = _decode_refresh(refresh_token, kit)
    stored = await repository.get_refresh_token_for_update(session, token_id)
    if stored is None or stored.user_id != user_id or stored.revoked_at is not None:
        raise Unauthorized("Invalid refresh token")
    if stored.used_at is not None:
        # Someone holds a copy: end the whole sign-in, its access tokens included (in
        # every process: the deny-list is in Redis).
        await repository.revoke_refresh_family(session, stored.family_id)
        _deny_family_after_commit(session, stored.family_id, kit)
        logger.warning(
            "refresh token reuse: family %s of user %s revoked", stored.family_id, user_id
        )
        raise RefreshTokenReused("Refresh token reuse detected; this session has been revoked")
    user = await user_repository.get(session, user_id)
    if user is None or not user.is_active:
        raise Unauthorized("Invalid refresh token")
    stored.used_at = utcnow()
    return await _issue_pair(session, user, family_id=stored.family_id, kit=kit)


async def logout(
    session: AsyncSession, principal: Principal, *, refresh_token: str, kit: AuthKit
) -> None:
    token_id, user_id = _decode_refresh(refresh_token, kit)
    stored = await repository.get_refresh_token_for_update(session, token_id)
    if stored is None or user_id != principal.account.id:
        raise Unauthorized("Invalid refresh token")
    await repository.revoke_refresh_family(session, stored.family_id)

    async def revoke_access_token() -> None:
        await kit.redis.set(
            revoked_access_key(principal.token_id), "1", exat=principal.token_expires_at
        )

    after_commit(session, revoke_access_token)
    # The access tokens issued by the session's earlier refreshes end with it.
    _deny_family_after_commit(session, stored.family_id, kit)


def _deny_family_after_commit(session: AsyncSession, family_id: UUID, kit: AuthKit) -> None:
    """Once committed, refuse every access token issued for the sign-in `family_id`,
    until the last one it can have expires."""
    lifetime = int(timedelta(minutes=kit.settings.auth.access_token_expire_minutes).total_seconds())

    async def deny() -> None:
        await kit.redis.set(revoked_family_key(family_id.hex), "1", ex=lifetime + _CLOCK_SKEW)

    after_commit(session, deny)


async def authenticate(
    maker: async_sessionmaker[AsyncSession],
    *,
    access_token: str,
    kit: AuthKit,
    prefetch: dict[str, object] | None = None,
) -> Principal:
    """The principal of an access token. The account comes from Redis when cached
    (app.auth.accounts); only a miss opens a short session of its own. The keys of
    `prefetch` are read from Redis in the same round trip."""
    try:
        claims = kit.tokens.decode(access_token, TokenType.access)
        user_id = UUID(claims["sub"])
    except (InvalidTokenError, ValueError) as exc:
        raise Unauthorized(
            "Invalid or expired access token",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        ) from exc
    jti = str(claims["jti"])
    version = claims.get("ver")
    family = claims.get("fam")
    family_id = family if isinstance(family, str) else None
    revoked, account = await kit.accounts.lookup(
        user_id, revoked_keys=deny_list_keys(jti, family_id), also=prefetch
    )
    if revoked:
        raise Unauthorized("This access token has been revoked")
    # A token newer than the cached account means the entry is behind: ask the database.
    if account is None or (isinstance(version, int) and version > account.token_version):
        async with session_scope(maker) as session:
            user = await user_repository.get(session, user_id)
            account = None if user is None else Account.of(user)
        if account is not None:
            await kit.accounts.fill(account)
    if account is None or not account.is_active or version != account.token_version:
        raise Unauthorized("This access token is no longer valid")
    expires_at = datetime.fromtimestamp(claims["exp"], tz=UTC)
    return Principal(
        account=account, token_id=jti, token_expires_at=expires_at, family_id=family_id
    )


def request_password_reset(session: AsyncSession, *, email: str) -> None:
    """Queue the reset email; the job does the lookup, so the request path is identical
    whether or not the account exists. Each request is a job of its own (and so an
    email): the limit on recoveries per address is what bounds them."""
    enqueue_after_commit(
        session, SEND_PASSWORD_RESET, email, job_id=f"{SEND_PASSWORD_RESET}:{uuid7().hex}"
    )


async def password_reset_message(
    session: AsyncSession, *, email: str, job_id: str, kit: AuthKit
) -> EmailMessage | None:
    """Store a new random reset token for `email` and return the email carrying it; None
    when there is no such active account. The token row belongs to the job: a job that
    runs again replaces its token, so one job never leaves two working links."""
    user = await user_repository.get_by_email(session, email)
    if user is None or not user.is_active:
        return None
    token = secrets.token_urlsafe(32)
    lifetime = timedelta(minutes=kit.settings.auth.password_reset_expire_minutes)
    await repository.store_reset_token(
        session,
        user_id=user.id,
        job_id=job_id,
        token_hash=sha256_hex(token),
        expires_at=utcnow() + lifetime,
    )
    link = f"{kit.settings.public_base_url.rstrip('/')}/reset-password?token={token}"
    return EmailMessage(
        to=user.email,
        subject=f"Reset your {kit.settings.project_name} password",
        body=(
            f"Someone asked to reset the password of {user.email}.\n\n"
            f"To choose a new password, open:\n{link}\n\n"
            f"The link works once and expires in {int(lifetime.total_seconds()) // 60} minutes. "
            "If you did not ask for this, ignore this email."
        ),
        message_id=_message_id(job_id, kit),
    )


async def welcome_message(
    session: AsyncSession, *, user_id: UUID, job_id: str, kit: AuthKit
) -> EmailMessage | None:
    user = await user_repository.get(session, user_id)
    if user is None or not user.is_active:
        return None
    name = kit.settings.project_name
    return EmailMessage(
        to=user.email,
        subject=f"Welcome to {name}",
        body=(
            f"Hello {user.full_name or user.email},\n\n"
            f"your {name} account is ready. Sign in with this email address.\n\n"
            "If you did not create it, reply to this email."
        ),
        message_id=_message_id(job_id, kit),
    )


def _message_id(job_id: str, kit: AuthKit) -> str:
    domain = kit.settings.mail.sender.rsplit("@", 1)[-1].rstrip(">").strip() or "localhost"
    return f"<{sha256_hex(job_id)[:32]}@{domain}>"


async def purge_expired_tokens(session: AsyncSession) -> tuple[int, int]:
    """Delete refresh and reset tokens that can no longer be used; the two counts."""
    return await repository.delete_expired_tokens(session, before=utcnow())


_INVALID_RESET = "This reset token is invalid, expired or already used"


async def reset_password(
    session: AsyncSession,
    *,
    maker: async_sessionmaker[AsyncSession],
    token: str,
    new_password: str,
    kit: AuthKit,
) -> None:
    """Locks in one order, the account row first: two resets of one account (two
    different tokens at once) queue on it instead of each holding one token row."""
    token_hash = sha256_hex(token)
    async with session_scope(maker) as reading:  # no connection held while hashing
        found = await repository.get_reset_token(reading, token_hash)
    if found is None or found.used_at is not None or found.expires_at <= utcnow():
        raise Unauthorized(_INVALID_RESET)
    hashed_password = await kit.passwords.hash(new_password)
    user = await session.get(User, found.user_id, with_for_update=True)
    if user is None or not user.is_active:
        raise Unauthorized(_INVALID_RESET)
    if not await repository.spend_reset_token(session, user_id=user.id, token_hash=token_hash):
        raise Unauthorized(_INVALID_RESET)
    user.hashed_password = hashed_password
    user.token_version += 1
    await repository.revoke_all_refresh_tokens(session, user.id)
    await session.flush()


def _decode_refresh(refresh_token: str, kit: AuthKit) -> tuple[UUID, UUID]:
    try:
        claims = kit.tokens.decode(refresh_token, TokenType.refresh)
        return UUID(claims["jti"]), UUID(claims["sub"])
    except (InvalidTokenError, ValueError) as exc:
        raise Unauthorized("Invalid refresh token") from exc


async def _issue_pair(
    session: AsyncSession, user: User, *, family_id: UUID, kit: AuthKit
) -> TokenPair:
    auth = kit.settings.auth
    access_lifetime = timedelta(minutes=auth.access_token_expire_minutes)
    access = kit.tokens.encode(
        TokenType.access,
        subject=str(user.id),
        jti=uuid7().hex,
        lifetime=access_lifetime,
        claims={"ver": user.token_version, "fam": family_id.hex},
    )
    refresh_id = uuid7()
    refreshed = kit.tokens.encode(
        TokenType.refresh,
        subject=str(user.id),
        jti=str(refresh_id),
        lifetime=timedelta(days=auth.refresh_token_expire_days),
    )
    await repository.add_refresh_token(
        session,
        token_id=refresh_id,
        user_id=user.id,
        family_id=family_id,
        expires_at=refreshed.expires_at,
    )
    return TokenPair(
        access_token=access.token,
        refresh_token=refreshed.token,
        expires_in=int(access_lifetime.total_seconds()),
    )
