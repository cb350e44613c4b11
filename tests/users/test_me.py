from __future__ import annotations

import httpx
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.resources import Resources
from app.core.security import PasswordHasher
from app.models import Item, Job, StoredFile, User
from tests.conftest import RunJobs
from tests.factories import PASSWORD, create_account, create_item, login
from tests.files.conftest import PDF, upload_one

ME = "/api/v1/users/me"


async def test_me_returns_the_caller(client: httpx.AsyncClient) -> None:
    account = await create_account(client, full_name="Grace Hopper")
    response = await client.get(ME, headers=account.headers)
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == str(account.id)
    assert body["full_name"] == "Grace Hopper"
    assert "hashed_password" not in body
    assert response.headers["cache-control"] == "no-store"


async def test_update_name(client: httpx.AsyncClient) -> None:
    account = await create_account(client)
    response = await client.patch(ME, json={"full_name": "Ada"}, headers=account.headers)
    assert response.status_code == 200
    assert response.json()["full_name"] == "Ada"


@pytest.mark.parametrize("field", ["role", "is_active", "id", "token_version"])
async def test_privileged_fields_cannot_be_smuggled_in(
    client: httpx.AsyncClient, db: AsyncSession, field: str
) -> None:
    account = await create_account(client)
    value: object = "admin" if field == "role" else True
    response = await client.patch(ME, json={field: value}, headers=account.headers)
    assert response.status_code == 422
    assert response.json()["errors"][0]["type"] == "extra_forbidden"
    stored = await db.get(User, account.id)
    assert stored is not None
    assert stored.role == "user"


async def test_changing_the_email_needs_the_current_password(client: httpx.AsyncClient) -> None:
    account = await create_account(client)
    missing = await client.patch(ME, json={"email": "new@example.com"}, headers=account.headers)
    wrong = await client.patch(
        ME,
        json={"email": "new@example.com", "current_password": "wrong-pass-1"},
        headers=account.headers,
    )
    right = await client.patch(
        ME,
        json={"email": "New@Example.com", "current_password": PASSWORD},
        headers=account.headers,
    )
    assert missing.status_code == 422
    assert wrong.status_code == 403
    assert right.status_code == 200
    assert right.json()["email"] == "new@example.com"


async def test_taking_another_users_email_is_409(client: httpx.AsyncClient) -> None:
    alice = await create_account(client)
    bob = await create_account(client)
    response = await client.patch(
        ME, json={"email": bob.email, "current_password": PASSWORD}, headers=alice.headers
    )
    assert response.status_code == 409


async def test_new_password_signs_out_old_tokens(client: httpx.AsyncClient) -> None:
    account = await create_account(client)
    response = await client.patch(
        ME,
        json={"password": "another-password-9", "current_password": PASSWORD},
        headers=account.headers,
    )
    assert response.status_code == 200
    assert (await client.get(ME, headers=account.headers)).status_code == 401
    assert (await login(client, account.email, "another-password-9")).status_code == 200
    assert (await login(client, account.email, PASSWORD)).status_code == 401


async def test_weak_new_password_is_422(client: httpx.AsyncClient) -> None:
    account = await create_account(client)
    response = await client.patch(
        ME, json={"password": "weak", "current_password": PASSWORD}, headers=account.headers
    )
    assert response.status_code == 422


async def test_delete_me_removes_the_account_and_its_items(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    account = await create_account(client)
    await create_item(client, account)
    response = await delete_me(client, account.headers, PASSWORD)
    assert response.status_code == 204
    assert await db.get(User, account.id) is None
    remaining = await db.scalar(
        select(func.count()).select_from(Item).where(Item.owner_id == account.id)
    )
    assert remaining == 0
    assert (await client.get(ME, headers=account.headers)).status_code == 401


async def test_delete_me_removes_the_bytes_of_its_files_and_exports(
    client: httpx.AsyncClient, db: AsyncSession, resources: Resources, run_jobs: RunJobs
) -> None:
    account = await create_account(client)
    await create_item(client, account)
    uploaded = await upload_one(client, account, ("a.pdf", PDF, "application/pdf"))
    export = await client.post("/api/v1/items/exports", headers=account.headers)
    assert await run_jobs() >= 1
    stored = await db.get(StoredFile, uploaded["id"])
    job = await db.get(Job, export.json()["job_id"])
    assert stored is not None
    assert job is not None
    assert job.file_key is not None
    paths = [resources.storage.local_path(key) for key in (stored.storage_key, job.file_key)]
    assert all(path.is_file() for path in paths)
    assert (await delete_me(client, account.headers, PASSWORD)).status_code == 204
    assert not any(path.exists() for path in paths)


async def delete_me(
    client: httpx.AsyncClient, headers: dict[str, str], password: str | None
) -> httpx.Response:
    body = None if password is None else {"current_password": password}
    return await client.request("DELETE", ME, json=body, headers=headers)


async def test_deleting_the_account_needs_the_current_password(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    """A stolen access token alone cannot delete the account."""
    account = await create_account(client)
    await create_item(client, account)
    missing = await delete_me(client, account.headers, None)
    assert missing.status_code == 422
    wrong = await delete_me(client, account.headers, "not-the-password-1")
    assert wrong.status_code == 403
    assert wrong.headers["content-type"] == "application/problem+json"
    assert await db.get(User, account.id) is not None
    assert (await client.get(ME, headers=account.headers)).status_code == 200


@pytest.mark.parametrize("field", ["email", "password", "current_password"])
async def test_null_for_a_required_field_is_422(client: httpx.AsyncClient, field: str) -> None:
    account = await create_account(client)
    response = await client.patch(ME, json={field: None}, headers=account.headers)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == f"body.{field}"


async def test_null_full_name_clears_it(client: httpx.AsyncClient) -> None:
    account = await create_account(client, full_name="Ada")
    response = await client.patch(ME, json={"full_name": None}, headers=account.headers)
    assert response.status_code == 200
    assert response.json()["full_name"] is None


async def test_guessing_the_current_password_is_throttled(client: httpx.AsyncClient) -> None:
    account = await create_account(client)
    statuses = [
        (
            await client.patch(
                ME,
                json={"email": "x@example.com", "current_password": f"guess-{n}"},
                headers=account.headers,
            )
        ).status_code
        for n in range(7)
    ]
    assert statuses == [403] * 5 + [429] * 2


async def test_a_password_changed_while_the_current_one_is_checked_is_409(
    client: httpx.AsyncClient, db: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The current password is verified before the request's session reads the account
    # again to write (no pooled connection waits for argon2): a change in between wins.
    account = await create_account(client)
    original = PasswordHasher.verify

    async def verify_then_change(self: PasswordHasher, hashed: str, password: str) -> bool:
        verified = await original(self, hashed, password)
        await db.execute(
            update(User).where(User.id == account.id).values(hashed_password="set-elsewhere")
        )
        await db.flush()
        return verified

    monkeypatch.setattr(PasswordHasher, "verify", verify_then_change)
    response = await client.patch(
        "/api/v1/users/me",
        json={"current_password": PASSWORD, "password": "a-new-secret-77"},
        headers=account.headers,
    )
    assert response.status_code == 409
    assert await db.scalar(select(User.hashed_password).where(User.id == account.id)) == (
        "set-elsewhere"
    )
