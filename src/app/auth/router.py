from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, status

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
from app.core.dependencies import SessionDep
from app.core.errors import problem_responses
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
async def register(body: RegisterRequest, session: SessionDep, kit: AuthKitDep) -> User:
    """Create an account. The password needs at least 8 characters, a letter and a digit."""
    return await auth_service.register(session, data=body, kit=kit)


@router.post("/token", responses=problem_responses(401, 403, 429))
async def token(
    form: Annotated[TokenForm, Form()],
    session: SessionDep,
    kit: AuthKitDep,
    client_address: ClientAddress,
) -> TokenPair:
    """OAuth2 password flow: `username` is the account's email.

    Answers one message for an unknown email and a wrong password, and 429 with
    `Retry-After` after repeated failures from one client.
    """
    return await auth_service.login(
        session,
        email=form.username,
        password=form.password,
        client_address=client_address,
        kit=kit,
    )


@router.post("/refresh", responses=problem_responses(401))
async def refresh(body: RefreshRequest, session: SessionDep, kit: AuthKitDep) -> TokenPair:
    """Exchange a refresh token for a new pair. Each refresh token works once: presenting
    a used one again revokes every token issued from the same login."""
    return await auth_service.refresh(session, refresh_token=body.refresh_token, kit=kit)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT, responses=problem_responses(401))
async def logout(
    body: LogoutRequest, principal: TokenPrincipal, session: SessionDep, kit: AuthKitDep
) -> None:
    """End this session: the refresh token (and its family) and the access token used
    for this call are rejected from now on."""
    await auth_service.logout(session, principal, refresh_token=body.refresh_token, kit=kit)


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
    "/reset-password", status_code=status.HTTP_204_NO_CONTENT, responses=problem_responses(400)
)
async def reset_password(body: PasswordResetRequest, session: SessionDep, kit: AuthKitDep) -> None:
    """Set a new password with the token from the reset email. This signs the account
    out everywhere."""
    await auth_service.reset_password(
        session, token=body.token, new_password=body.new_password, kit=kit
    )
