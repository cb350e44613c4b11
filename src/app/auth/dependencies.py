"""Authentication and authorisation as dependencies: `CurrentUser`, `AdminUser`..."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import BackgroundTasks, Depends, Header, Request, Security
from fastapi.security import APIKeyHeader, OAuth2PasswordBearer, SecurityScopes
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.requests import HTTPConnection

from app.api_keys import service as api_key_service
from app.auth import service as auth_service
from app.auth.actor import Actor
from app.auth.ratelimits import record_bad_key, refuse_key_guessing, remember_key
from app.auth.scopes import DESCRIPTIONS, Scope
from app.auth.service import AuthKit, Principal
from app.core.context import PREFETCH_SCOPE_KEY
from app.core.db import after_commit, on_rollback, session_scope
from app.core.dependencies import RedisDep, ResourcesDep, SessionDep, SessionmakerDep
from app.core.errors import Forbidden, Unauthorized
from app.core.http import client_address
from app.core.idempotency import Idempotency, attach, fingerprint, form_fingerprint
from app.core.observability import USER_ID_SCOPE_KEY
from app.core.resources import Resources
from app.models import Role, User
from app.users import service as user_service

oauth2_scheme = OAuth2PasswordBearer(
    tokenUrl="/api/v1/auth/token",
    refreshUrl="/api/v1/auth/refresh",
    scopes={scope.value: description for scope, description in DESCRIPTIONS.items()},
    description="Log in with your email as `username`; the access token is sent as a "
    "bearer token and may do everything your role allows (scopes restrict API keys only).",
    auto_error=False,
)
api_key_scheme = APIKeyHeader(
    name="X-API-Key",
    description="A personal API key (`POST /api/v1/users/me/api-keys`), limited to its scopes.",
    auto_error=False,
)

BearerToken = Annotated[str | None, Depends(oauth2_scheme)]
ApiKeyValue = Annotated[str | None, Depends(api_key_scheme)]


async def get_auth_kit(resources: ResourcesDep) -> AuthKit:
    return AuthKit.from_resources(resources)


AuthKitDep = Annotated[AuthKit, Depends(get_auth_kit)]


async def _key_principal(
    connection: HTTPConnection,
    api_key: str,
    maker: async_sessionmaker[AsyncSession],
    resources: Resources,
) -> Principal:
    """The principal of an API key, unless its address has been guessing keys."""
    await refuse_key_guessing(connection, resources)
    try:
        async with session_scope(maker) as session:
            principal = await api_key_service.authenticate(session, api_key)
    except Unauthorized:
        await record_bad_key(connection, resources)
        raise
    await remember_key(connection, resources, api_key)
    return principal


async def _principal(
    connection: HTTPConnection,
    token: str | None,
    api_key: str | None,
    maker: async_sessionmaker[AsyncSession],
    resources: Resources,
) -> Principal:
    """The caller, from an API key or else a bearer token."""
    if api_key:
        return await _key_principal(connection, api_key, maker, resources)
    if token:
        kit = AuthKit.from_resources(resources)
        return await auth_service.authenticate(
            maker, access_token=token, kit=kit, prefetch=connection.scope.get(PREFETCH_SCOPE_KEY)
        )
    raise Unauthorized("Send a bearer token or an X-API-Key")


async def _authenticate(
    security_scopes: SecurityScopes,
    connection: HTTPConnection,
    token: str | None,
    api_key: str | None,
    maker: async_sessionmaker[AsyncSession],
    resources: Resources,
) -> Principal:
    """The caller, from an API key or else a bearer token, holding every scope the
    route (and the dependencies in between) declared. Any database read happens in a
    short session of its own, so no connection is held for the rest of the request
    (nor taken at all when Redis has the account: see app.auth.accounts)."""
    principal = await _principal(connection, token, api_key, maker, resources)
    missing = sorted(set(security_scopes.scopes) - principal.scopes)
    if missing:
        raise Forbidden(
            f"This API key lacks the scopes: {', '.join(missing)}",
            headers={
                "WWW-Authenticate": (
                    f'Bearer error="insufficient_scope", scope="{security_scopes.scope_str}"'
                )
            },
        )
    # For the access log, which runs outside the routing.
    connection.scope[USER_ID_SCOPE_KEY] = str(principal.account.id)
    return principal


async def get_principal(
    security_scopes: SecurityScopes,
    connection: HTTPConnection,
    token: BearerToken,
    api_key: ApiKeyValue,
    maker: SessionmakerDep,
    background: BackgroundTasks,
    resources: ResourcesDep,
) -> Principal:
    principal = await _authenticate(security_scopes, connection, token, api_key, maker, resources)
    if principal.api_key_id is not None:
        background.add_task(api_key_service.mark_used, resources, principal.api_key_id)
    return principal


async def get_stream_principal(
    security_scopes: SecurityScopes,
    connection: HTTPConnection,
    token: BearerToken,
    api_key: ApiKeyValue,
    resources: ResourcesDep,
    maker: SessionmakerDep,
) -> Principal:
    """For requests that stay open or stream a body (SSE, uploads): the same, without
    the API key's last-use note (a background task would wait for the stream's end)."""
    return await _authenticate(security_scopes, connection, token, api_key, maker, resources)


async def authenticate_briefly(
    connection: HTTPConnection,
    token: str,
    *,
    resources: ResourcesDep,
    maker: SessionmakerDep,
    api_key: str | None = None,
) -> Principal:
    """The same, outside FastAPI's security (the WebSocket authenticates by hand)."""
    return await _principal(connection, token, api_key, maker, resources)


async def _user_of(principal: Principal, session: AsyncSession) -> User:
    """The caller's row, for the routes that read or change the account itself
    (authentication alone only needs `principal.account`, usually from Redis)."""
    return await user_service.active(session, principal.account.id)


async def get_current_user(
    principal: Annotated[Principal, Depends(get_principal)], maker: SessionmakerDep
) -> User:
    """The caller's row, read in a short session: the connection goes back to the pool
    before the response is rendered (the routes that change the account use
    `TokenUser`, in the request's session)."""
    async with session_scope(maker) as session:
        return await _user_of(principal, session)


async def get_actor(principal: Annotated[Principal, Depends(get_principal)]) -> Actor:
    return principal.actor


def scoped(*scopes: Scope) -> Any:
    """`Security(...)` for a user dependency that needs `scopes` (API keys only)."""
    return Security(get_current_user, scopes=[scope.value for scope in scopes])


def acting(*scopes: Scope) -> Any:
    """`Security(...)` for the `Actor` of a route that needs `scopes` (API keys only)."""
    return Security(get_actor, scopes=[scope.value for scope in scopes])


def stream_scoped(*scopes: Scope) -> Any:
    return Security(get_stream_principal, scopes=[scope.value for scope in scopes])


ItemsReader = Annotated[Actor, acting(Scope.items_read)]
ItemsWriter = Annotated[Actor, acting(Scope.items_write)]
FilesReader = Annotated[Actor, acting(Scope.files_read)]
FilesWriter = Annotated[Principal, stream_scoped(Scope.files_write)]
JobsReader = Annotated[Actor, acting(Scope.jobs_read)]
AccountReader = Annotated[User, scoped(Scope.account_read)]
EventsReader = Annotated[Principal, stream_scoped(Scope.events_read)]


async def get_token_principal(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
    if principal.api_key_id is not None:
        raise Forbidden("This needs a bearer token: API keys cannot manage the account")
    return principal


# The account itself (profile, password, API keys, logout): access tokens only.
TokenPrincipal = Annotated[Principal, Depends(get_token_principal)]


async def get_token_user(principal: TokenPrincipal, session: SessionDep) -> User:
    return await _user_of(principal, session)


TokenUser = Annotated[User, Depends(get_token_user)]


class RequireRole:
    """A dependency that admits only callers holding one of `roles`. The role comes
    with authentication (app.auth.accounts), so the check reads no database row."""

    def __init__(self, *roles: Role) -> None:
        self.roles = frozenset(roles)

    async def __call__(self, actor: Annotated[Actor, Depends(get_actor)]) -> Actor:
        if actor.role not in self.roles:
            raise Forbidden(
                "This operation needs one of the roles: " + ", ".join(sorted(self.roles))
            )
        return actor


# Admin routes: the admin role, and the admin scope when an API key is used.
AdminUser = Annotated[Actor, Security(RequireRole(Role.admin), scopes=[Scope.admin.value])]


async def get_client_address(connection: HTTPConnection) -> str:
    return client_address(connection)


ClientAddress = Annotated[str, Depends(get_client_address)]


FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")

IdempotencyKey = Annotated[
    str | None,
    Header(
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="Repeat a create safely: the same key and body return the first "
        "response for 24 hours instead of creating again.",
    ),
]


def idempotency_for(request: Request, redis: Redis, key: str, **options: Any) -> Idempotency:
    """The caller's `Idempotency-Key`. Keys are per caller: the dependency that calls
    this follows the route's authentication, which left the caller's id in the scope
    (loading the user again would cost a query)."""
    caller = request.scope.get(USER_ID_SCOPE_KEY)
    if not isinstance(caller, str):
        msg = "an idempotency dependency must follow the route's authentication"
        raise TypeError(msg)
    return Idempotency(redis, scope=caller, key=key, **options)


def track(request: Request, session: AsyncSession, idempotency: Idempotency) -> None:
    """Store the response once the request's transaction commits; free the key if it
    rolls back."""
    after_commit(session, idempotency.store)
    on_rollback(session, idempotency.release)
    attach(request, idempotency)


async def get_idempotency(
    request: Request, session: SessionDep, redis: RedisDep, idempotency_key: IdempotencyKey = None
) -> Idempotency | None:
    if idempotency_key is None:
        return None
    method, path = request.method, request.url.path
    if request.headers.get("content-type", "").startswith(FORM_TYPES):
        # FastAPI parsed the form for the endpoint already (the stream is consumed).
        digest = await form_fingerprint(method, path, await request.form())
    else:
        digest = fingerprint(method, path, await request.body())
    idempotency = idempotency_for(request, redis, idempotency_key, fingerprint=digest)
    await idempotency.begin()
    track(request, session, idempotency)
    return idempotency


IdempotencyDep = Annotated[Idempotency | None, Depends(get_idempotency)]
