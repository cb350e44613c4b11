from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Response, status

from app.auth import cookies
from app.auth import service as auth_service
from app.auth.dependencies import AuthKitDep, ClientAddress, TokenPrincipal
from app.auth.ratelimits import PerAddress
from app.auth.schemas import (
    Accepted,
    LogoutRequest,
    PasswordRecoveryRequest,
    PasswordResetRequest,
    RefreshRequest,
    RegisterRequest,
    TokenForm,
    TokenPair,
)
from app.core.dependencies import SessionDep, SessionmakerDep
from app.core.errors import Unauthorized, problem_responses
from app.core.http import NO_STORE
from app.models import User
from app.users.schemas import UserRead

router = APIRouter(prefix="/auth", tags=["auth"], dependencies=[NO_STORE])


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    response_model=UserRead,
    responses=problem_responses(409, 429),
    dependencies=[Depends(PerAddress("registrations", per_hour="registrations_per_hour"))],
)
async def register(
    body: RegisterRequest, session: SessionDep, maker: SessionmakerDep, kit: AuthKitDep
) -> User:
    """Create an account. The password needs at least 8 characters, a letter and a digit."""
    return await auth_service.register(session, maker=maker, data=body, kit=kit)


@router.post("/token", responses=problem_responses(401, 403, 429))
async def token(
    form: Annotated[TokenForm, Form()],
    session: SessionDep,
    maker: SessionmakerDep,
    kit: AuthKitDep,
    client_address: ClientAddress,
    response: Response,
    as_cookie: cookies.CookieMode = False,
) -> TokenPair:
    """OAuth2 password flow: `username` is the account's email.

    Answers one message for an unknown email and a wrong password, and 429 with
    `Retry-After` after repeated failures from one client. Browser apps may add
    `?cookie=true` to receive the refresh token as an HttpOnly cookie instead.
    """
    pair = await auth_service.login(
        session,
        maker=maker,
        email=form.username,
        password=form.password,
        client_address=client_address,
        kit=kit,
    )
    return cookies.deliver(pair, response, as_cookie=as_cookie, settings=kit.settings)


def _presented(body: RefreshRequest | LogoutRequest | None, cookie: str | None) -> str:
    token = body.refresh_token if body is not None else cookie
    if token is None:
        raise Unauthorized("Send the refresh token in the body or its cookie")
    return token


@router.post("/refresh", responses=problem_responses(401))
async def refresh(
    session: SessionDep,
    kit: AuthKitDep,
    response: Response,
    refresh_cookie: cookies.RefreshCookie = None,
    body: RefreshRequest | None = None,
) -> TokenPair:
    """Exchange a refresh token (in the body, or the cookie of `?cookie=true`) for a new
    pair, delivered the same way. Each refresh token works once: presenting a used one
    again revokes every token issued from the same login."""
    presented = _presented(body, refresh_cookie)
    pair = await auth_service.refresh(session, refresh_token=presented, kit=kit)
    return cookies.deliver(pair, response, as_cookie=body is None, settings=kit.settings)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT, responses=problem_responses(401))
async def logout(
    principal: TokenPrincipal,
    session: SessionDep,
    kit: AuthKitDep,
    response: Response,
    refresh_cookie: cookies.RefreshCookie = None,
    body: LogoutRequest | None = None,
) -> None:
    """End this session: the refresh token (body or cookie) and its family, and the
    access token used for this call, are rejected from now on; the cookie is cleared."""
    presented = _presented(body, refresh_cookie)
    await auth_service.logout(session, principal, refresh_token=presented, kit=kit)
    cookies.clear(response, kit.settings)


@router.post(
    "/password-recovery",
    status_code=status.HTTP_202_ACCEPTED,
    responses=problem_responses(429),
    dependencies=[Depends(PerAddress("recoveries", per_hour="recoveries_per_hour"))],
)
async def password_recovery(body: PasswordRecoveryRequest, session: SessionDep) -> Accepted:
    """Email a single-use password-reset link. Answers the same whether or not the
    account exists."""
    auth_service.request_password_reset(session, email=body.email)
    return Accepted(detail="If an account exists for this email, a reset link is on its way.")


@router.post(
    "/reset-password", status_code=status.HTTP_204_NO_CONTENT, responses=problem_responses(401)
)
async def reset_password(
    body: PasswordResetRequest, session: SessionDep, maker: SessionmakerDep, kit: AuthKitDep
) -> None:
    """Set a new password with the token from the reset email. This signs the account
    out everywhere."""
    await auth_service.reset_password(
        session, maker=maker, token=body.token, new_password=body.new_password, kit=kit
    )
