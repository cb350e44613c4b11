from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query, status

from app.auth.dependencies import (
    AccountReader,
    AdminUser,
    AuthKitDep,
    ClientAddress,
    TokenPrincipal,
)
from app.core.dependencies import ResourcesDep, SessionDep, SessionmakerDep
from app.core.errors import problem_responses
from app.core.http import NO_STORE
from app.core.pagination import Page, Paged, PageParams
from app.models import User
from app.users import service as user_service
from app.users.schemas import AccountDeletion, UserAdminUpdate, UserRead, UserUpdateMe

router = APIRouter(
    prefix="/users",
    tags=["users"],
    dependencies=[NO_STORE],
    responses=problem_responses(401),
)


@router.get("/me", response_model=UserRead)
async def read_me(user: AccountReader) -> User:
    """The account of the caller."""
    return user


@router.patch("/me", response_model=UserRead, responses=problem_responses(403, 409, 429))
async def update_me(
    body: UserUpdateMe,
    principal: TokenPrincipal,
    session: SessionDep,
    maker: SessionmakerDep,
    kit: AuthKitDep,
    client_address: ClientAddress,
) -> User:
    """Change your name, email or password. Changing the email or the password needs
    `current_password` (wrong guesses are throttled like logins); a new password signs
    you out everywhere."""
    return await user_service.update_me(
        session,
        principal.account.id,
        maker=maker,
        data=body,
        kit=kit,
        client_address=client_address,
    )


@router.delete(
    "/me", status_code=status.HTTP_204_NO_CONTENT, responses=problem_responses(403, 409, 429)
)
async def delete_me(
    body: AccountDeletion,
    principal: TokenPrincipal,
    session: SessionDep,
    maker: SessionmakerDep,
    kit: AuthKitDep,
    client_address: ClientAddress,
    resources: ResourcesDep,
) -> None:
    """Delete your account and everything it owns. Needs `current_password` in the body
    (403 when wrong; wrong guesses are throttled like logins) and a bearer token: API
    keys cannot delete accounts. The last active admin cannot delete themselves (409)."""
    await user_service.delete_me(
        session,
        principal.account.id,
        maker=maker,
        current_password=body.current_password,
        kit=kit,
        client_address=client_address,
        storage=resources.storage,
    )


@router.get("", response_model=Page[UserRead], responses=problem_responses(403))
async def list_users(
    admin: AdminUser, session: SessionDep, page: Annotated[PageParams, Query()]
) -> Paged[User]:
    """All accounts, newest first (admins only)."""
    return await user_service.list_page(session, page=page)


@router.get("/{user_id:uuid}", response_model=UserRead, responses=problem_responses(403, 404))
async def read_user(user_id: UUID, admin: AdminUser, session: SessionDep) -> User:
    """One account (admins only)."""
    return await user_service.get(session, user_id)


@router.patch(
    "/{user_id:uuid}", response_model=UserRead, responses=problem_responses(403, 404, 409)
)
async def update_user(
    user_id: UUID,
    body: UserAdminUpdate,
    admin: AdminUser,
    session: SessionDep,
    resources: ResourcesDep,
) -> User:
    """Change any account, its role and whether it is active (admins only). The last
    active admin cannot be demoted or deactivated."""
    return await user_service.update(session, user_id, data=body, passwords=resources.passwords)


@router.delete(
    "/{user_id:uuid}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_responses(403, 404, 409),
)
async def delete_user(
    user_id: UUID, admin: AdminUser, session: SessionDep, resources: ResourcesDep
) -> None:
    """Delete an account and everything it owns (admins only)."""
    await user_service.delete(session, user_id, storage=resources.storage)
