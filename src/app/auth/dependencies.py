"""Authentication and authorisation as dependencies: `CurrentUser`, `AdminUser`..."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import OAuth2PasswordBearer
from starlette.requests import HTTPConnection

from app.auth import service as auth_service
from app.auth.service import AuthKit, Principal
from app.core.db import after_commit, on_rollback, session_scope
from app.core.dependencies import RedisDep, ResourcesDep, SessionDep, SessionmakerDep
from app.core.errors import Forbidden
from app.core.idempotency import Idempotency, attach, fingerprint
from app.core.observability import USER_ID_SCOPE_KEY
from app.models import Role, User

oauth2_scheme = OAuth2PasswordBearer(
    tokenUrl="/api/v1/auth/token",
    refreshUrl="/api/v1/auth/refresh",
    description="Log in with your email as `username`; the access token is sent as a bearer token.",
)


async def get_auth_kit(resources: ResourcesDep) -> AuthKit:
    return AuthKit.from_resources(resources)


AuthKitDep = Annotated[AuthKit, Depends(get_auth_kit)]


def _remember_caller(connection: HTTPConnection, principal: Principal) -> Principal:
    # For the access log, which runs outside the routing.
    connection.scope[USER_ID_SCOPE_KEY] = str(principal.user.id)
    return principal


async def get_principal(
    connection: HTTPConnection,
    token: Annotated[str, Depends(oauth2_scheme)],
    session: SessionDep,
    kit: AuthKitDep,
) -> Principal:
    principal = await auth_service.authenticate(session, access_token=token, kit=kit)
    return _remember_caller(connection, principal)


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


async def authenticate_briefly(
    token: str, *, resources: ResourcesDep, maker: SessionmakerDep
) -> Principal:
    """Authenticate in a session of its own, closed at once: for connections that stay
    open (SSE, WebSocket), which must not hold a database connection while they live."""
    async with session_scope(maker) as session:
        return await auth_service.authenticate(
            session, access_token=token, kit=AuthKit.from_resources(resources)
        )


async def get_stream_principal(
    connection: HTTPConnection,
    token: Annotated[str, Depends(oauth2_scheme)],
    resources: ResourcesDep,
    maker: SessionmakerDep,
) -> Principal:
    principal = await authenticate_briefly(token, resources=resources, maker=maker)
    return _remember_caller(connection, principal)


StreamPrincipal = Annotated[Principal, Depends(get_stream_principal)]


async def get_current_user(principal: CurrentPrincipal) -> User:
    return principal.user


CurrentUser = Annotated[User, Depends(get_current_user)]


class RequireRole:
    """A dependency that admits only users holding one of `roles`."""

    def __init__(self, *roles: Role) -> None:
        self.roles = frozenset(roles)

    async def __call__(self, user: CurrentUser) -> User:
        if user.role not in self.roles:
            raise Forbidden(
                "This operation needs one of the roles: " + ", ".join(sorted(self.roles))
            )
        return user


AdminUser = Annotated[User, Depends(RequireRole(Role.admin))]


def client_address(connection: HTTPConnection) -> str:
    # Behind a proxy, run uvicorn with --proxy-headers/--forwarded-allow-ips so this is
    # the client's address and not the proxy's.
    return connection.client.host if connection.client else "unknown"


async def get_client_address(connection: HTTPConnection) -> str:
    return client_address(connection)


ClientAddress = Annotated[str, Depends(get_client_address)]


async def get_idempotency(
    request: Request,
    user: CurrentUser,
    session: SessionDep,
    redis: RedisDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            min_length=1,
            max_length=255,
            pattern=r"^[\x21-\x7e]+$",
            description="Repeat a create safely: the same key and body return the first "
            "response for 24 hours instead of creating again.",
        ),
    ] = None,
) -> Idempotency | None:
    if idempotency_key is None:
        return None
    idempotency = Idempotency(
        redis,
        scope=str(user.id),
        key=idempotency_key,
        fingerprint=fingerprint(request.method, request.url.path, await request.body()),
    )
    await idempotency.begin()
    after_commit(session, idempotency.store)
    on_rollback(session, idempotency.release)
    attach(request, idempotency)
    return idempotency


IdempotencyDep = Annotated[Idempotency | None, Depends(get_idempotency)]
