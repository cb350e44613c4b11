from __future__ import annotations

import httpx
import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Role, User
from tests.factories import PASSWORD, create_account, create_admin, login

USERS = "/api/v1/users"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", USERS),
        ("GET", f"{USERS}/00000000-0000-7000-8000-000000000000"),
        ("PATCH", f"{USERS}/00000000-0000-7000-8000-000000000000"),
        ("DELETE", f"{USERS}/00000000-0000-7000-8000-000000000000"),
    ],
)
async def test_admin_routes_are_403_for_users(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    account = await create_account(client)
    body = {"full_name": "x"} if method == "PATCH" else None
    response = await client.request(method, path, json=body, headers=account.headers)
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"


async def test_admin_lists_every_user_page_by_page(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    admin = await create_admin(client, db)
    created = {str((await create_account(client)).id) for _ in range(5)} | {str(admin.id)}
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        response = await client.get(USERS, params=params, headers=admin.headers)
        assert response.status_code == 200
        page = response.json()
        assert len(page["items"]) <= 2
        seen += [user["id"] for user in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen))
    assert created <= set(seen)


async def test_admin_reads_and_updates_a_user(client: httpx.AsyncClient, db: AsyncSession) -> None:
    admin = await create_admin(client, db)
    account = await create_account(client)
    read = await client.get(f"{USERS}/{account.id}", headers=admin.headers)
    assert read.status_code == 200
    assert read.json()["email"] == account.email
    promoted = await client.patch(
        f"{USERS}/{account.id}", json={"role": "admin", "full_name": "Boss"}, headers=admin.headers
    )
    assert promoted.status_code == 200
    assert promoted.json()["role"] == "admin"
    assert promoted.json()["full_name"] == "Boss"


async def test_deactivating_a_user_kills_their_tokens(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    admin = await create_admin(client, db)
    account = await create_account(client)
    response = await client.patch(
        f"{USERS}/{account.id}", json={"is_active": False}, headers=admin.headers
    )
    assert response.status_code == 200
    assert (await client.get("/api/v1/users/me", headers=account.headers)).status_code == 401
    refreshed = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": account.refresh_token}
    )
    assert refreshed.status_code == 401
    assert (await login(client, account.email, PASSWORD)).status_code == 403


async def test_admin_deletes_a_user(client: httpx.AsyncClient, db: AsyncSession) -> None:
    admin = await create_admin(client, db)
    account = await create_account(client)
    assert (await client.delete(f"{USERS}/{account.id}", headers=admin.headers)).status_code == 204
    assert await db.get(User, account.id) is None
    gone = await client.get(f"{USERS}/{account.id}", headers=admin.headers)
    assert gone.status_code == 404


async def test_unknown_user_is_404(client: httpx.AsyncClient, db: AsyncSession) -> None:
    admin = await create_admin(client, db)
    response = await client.get(
        f"{USERS}/00000000-0000-7000-8000-000000000000", headers=admin.headers
    )
    assert response.status_code == 404


async def test_a_path_that_is_not_a_user_id_is_404(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    # Ids match only UUIDs, so `/users/me`'s neighbours never reach `/users/{user_id}`.
    admin = await create_admin(client, db)
    response = await client.get(f"{USERS}/not-a-uuid", headers=admin.headers)
    assert response.status_code == 404


async def test_the_last_admin_cannot_be_demoted_deactivated_or_deleted(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    await db.execute(update(User).where(User.role == Role.admin).values(role=Role.user))
    admin = await create_admin(client, db)
    path = f"{USERS}/{admin.id}"
    for change in ({"role": "user"}, {"is_active": False}):
        response = await client.patch(path, json=change, headers=admin.headers)
        assert response.status_code == 409, change
    assert (await client.delete(path, headers=admin.headers)).status_code == 409
    mine = await client.request(
        "DELETE", "/api/v1/users/me", json={"current_password": PASSWORD}, headers=admin.headers
    )
    assert mine.status_code == 409


async def test_an_admin_can_step_down_when_another_remains(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    first = await create_admin(client, db)
    await create_admin(client, db)
    response = await client.patch(
        f"{USERS}/{first.id}", json={"role": "user"}, headers=first.headers
    )
    assert response.status_code == 200
    assert response.json()["role"] == "user"


async def test_admin_update_refuses_unknown_fields(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    admin = await create_admin(client, db)
    account = await create_account(client)
    response = await client.patch(
        f"{USERS}/{account.id}", json={"hashed_password": "x"}, headers=admin.headers
    )
    assert response.status_code == 422


@pytest.mark.parametrize("field", ["role", "is_active", "email"])
async def test_admin_null_for_a_required_field_is_422(
    client: httpx.AsyncClient, db: AsyncSession, field: str
) -> None:
    admin = await create_admin(client, db)
    account = await create_account(client)
    response = await client.patch(
        f"{USERS}/{account.id}", json={field: None}, headers=admin.headers
    )
    assert response.status_code == 422


async def test_reactivating_a_user_does_not_revive_old_tokens(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    admin = await create_admin(client, db)
    account = await create_account(client)
    path = f"{USERS}/{account.id}"
    await client.patch(path, json={"is_active": False}, headers=admin.headers)
    await client.patch(path, json={"is_active": True}, headers=admin.headers)
    assert (await client.get("/api/v1/users/me", headers=account.headers)).status_code == 401
    refreshed = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": account.refresh_token}
    )
    assert refreshed.status_code == 401
    assert (await login(client, account.email, PASSWORD)).status_code == 200
