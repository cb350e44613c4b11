"""Personal API keys: shown once, stored hashed, accepted as X-API-Key, limited by
scopes enforced with FastAPI's Security."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.api_keys import repository as api_key_repository
from app.api_keys.service import MAX_KEYS_PER_USER
from app.core.db import utcnow
from app.models import ApiKey, User
from tests.factories import PASSWORD, Account, create_account, create_admin, create_item
from tests.files.conftest import PDF, upload_one
from tests.waiting import wait_until

KEYS = "/api/v1/users/me/api-keys"
ITEMS = "/api/v1/items"


async def new_key(
    client: httpx.AsyncClient, account: Account, *scopes: str, **extra: Any
) -> dict[str, Any]:
    body = {"name": "robot", "scopes": list(scopes)} | extra
    response = await client.post(KEYS, json=body, headers=account.headers)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def as_key(created: dict[str, Any]) -> dict[str, str]:
    return {"X-API-Key": created["key"]}


async def test_a_key_is_shown_once_and_stored_hashed(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    account = await create_account(client)
    created = await new_key(client, account, "items:read", "items:write", "items:read")
    assert created["key"].startswith(f"ak_{created['prefix']}_")
    assert created["scopes"] == ["items:read", "items:write"]
    assert created["expires_at"] is None
    listed = (await client.get(KEYS, headers=account.headers)).json()
    assert listed == [{key: value for key, value in created.items() if key != "key"}]
    stored = await db.scalar(select(ApiKey).where(ApiKey.id == created["id"]))
    assert stored is not None
    secret = created["key"].rsplit("_", 1)[1]
    assert secret not in (stored.secret_hash, stored.prefix)
    assert created["key"] not in str(listed)


async def test_a_key_does_what_its_scopes_say_and_nothing_more(
    client: httpx.AsyncClient,
) -> None:
    account = await create_account(client)
    reader = as_key(await new_key(client, account, "items:read"))
    assert (await client.get(ITEMS, headers=reader)).status_code == 200
    refused = await client.post(ITEMS, json={"title": "x", "price": "1"}, headers=reader)
    assert refused.status_code == 403
    assert refused.headers["www-authenticate"] == (
        'Bearer error="insufficient_scope", scope="items:write"'
    )
    assert (await client.get("/api/v1/files", headers=reader)).status_code == 403
    writer = as_key(await new_key(client, account, "items:write"))
    created = await client.post(ITEMS, json={"title": "x", "price": "1"}, headers=writer)
    assert created.status_code == 201
    assert created.json()["owner_id"] == str(account.id)


async def test_a_key_cannot_manage_the_account(client: httpx.AsyncClient) -> None:
    account = await create_account(client)
    key = as_key(await new_key(client, account, "account:read"))
    assert (await client.get("/api/v1/users/me", headers=key)).status_code == 200
    for method, path, body in (
        ("PATCH", "/api/v1/users/me", {"full_name": "Robot"}),
        ("DELETE", "/api/v1/users/me", {"current_password": PASSWORD}),
        ("POST", KEYS, {"name": "more", "scopes": ["items:read"]}),
        ("GET", KEYS, None),
        ("POST", "/api/v1/auth/logout", {"refresh_token": account.refresh_token}),
    ):
        response = await client.request(method, path, json=body, headers=key)
        assert response.status_code == 403, (method, path)


async def test_revoked_expired_and_unknown_keys_are_401(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    account = await create_account(client)
    revoked = await new_key(client, account, "items:read")
    expired = await new_key(client, account, "items:read")
    deleted = await client.delete(f"{KEYS}/{revoked['id']}", headers=account.headers)
    assert deleted.status_code == 204
    await db.execute(
        update(ApiKey)
        .where(ApiKey.id == expired["id"])
        .values(expires_at=utcnow() - timedelta(seconds=1))
    )
    await db.commit()
    forged = expired["key"][:-4] + "AAAA"
    for key in (revoked["key"], expired["key"], forged, "ak_nope", "not-a-key"):
        response = await client.get(ITEMS, headers={"X-API-Key": key})
        assert response.status_code == 401, key


async def test_a_deactivated_owners_keys_stop_working(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    account = await create_account(client)
    key = as_key(await new_key(client, account, "items:read"))
    await db.execute(update(User).where(User.id == account.id).values(is_active=False))
    await db.commit()
    assert (await client.get(ITEMS, headers=key)).status_code == 401


async def test_another_users_key_is_404(client: httpx.AsyncClient) -> None:
    owner, other = await create_account(client), await create_account(client)
    created = await new_key(client, owner, "items:read")
    response = await client.delete(f"{KEYS}/{created['id']}", headers=other.headers)
    assert response.status_code == 404
    assert (await client.get(ITEMS, headers=as_key(created))).status_code == 200


async def test_the_admin_scope_is_for_admins_and_needed_by_them(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    user, admin = await create_account(client), await create_admin(client, db)
    refused = await client.post(KEYS, json={"name": "x", "scopes": ["admin"]}, headers=user.headers)
    assert refused.status_code == 403
    without = as_key(await new_key(client, admin, "items:read"))
    assert (await client.get("/api/v1/users", headers=without)).status_code == 403
    with_admin = as_key(await new_key(client, admin, "admin"))
    assert (await client.get("/api/v1/users", headers=with_admin)).status_code == 200


async def test_an_admins_key_without_the_admin_scope_sees_only_the_admins_own_objects(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    user, admin = await create_account(client), await create_admin(client, db)
    item = await create_item(client, user)
    file = await upload_one(client, user, ("a.pdf", PDF, "application/pdf"))
    export = await client.post(f"{ITEMS}/exports", headers=user.headers)
    job_id = export.json()["job_id"]
    key = as_key(
        await new_key(client, admin, "items:read", "items:write", "files:read", "jobs:read")
    )
    # The admin's own token sees the user's objects; the narrower key must not.
    assert (await client.get(f"{ITEMS}/{item['id']}", headers=admin.headers)).status_code == 200
    for path in (
        f"{ITEMS}/{item['id']}",
        f"/api/v1/files/{file['id']}",
        f"/api/v1/files/{file['id']}/content",
        f"/api/v1/jobs/{job_id}",
    ):
        assert (await client.get(path, headers=key)).status_code == 404, path
    assert (await client.get(ITEMS, headers=key)).json()["items"] == []
    stream = await client.get(f"{ITEMS}/stream", headers=key)
    assert stream.status_code == 200
    assert stream.text == ""
    changed = await client.patch(f"{ITEMS}/{item['id']}", json={"title": "x"}, headers=key)
    assert changed.status_code == 404
    admin_key = as_key(await new_key(client, admin, "items:read", "admin"))
    assert (await client.get(f"{ITEMS}/{item['id']}", headers=admin_key)).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x", "scopes": []},
        {"name": "x", "scopes": ["everything"]},
        {"name": "", "scopes": ["items:read"]},
        {"name": "x", "scopes": ["items:read"], "expires_in_days": 0},
        {"name": "x", "scopes": ["items:read"], "prefix": "mine"},
    ],
)
async def test_invalid_key_requests_are_422(
    client: httpx.AsyncClient, body: dict[str, object]
) -> None:
    account = await create_account(client)
    assert (await client.post(KEYS, json=body, headers=account.headers)).status_code == 422


async def test_the_last_use_is_recorded_after_the_response(
    committed_client: httpx.AsyncClient, committed: Any
) -> None:
    account = await create_account(committed_client)
    created = await new_key(committed_client, account, "items:read")
    assert created["last_used_at"] is None
    await committed_client.get(ITEMS, headers=as_key(created))

    async def used() -> bool:
        listed = (await committed_client.get(KEYS, headers=account.headers)).json()
        return listed[0]["last_used_at"] is not None

    await wait_until(used, within=5)


async def test_concurrent_creates_cannot_pass_the_cap(
    committed_client: httpx.AsyncClient, committed: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = await create_account(committed_client)
    for _ in range(MAX_KEYS_PER_USER - 1):
        await new_key(committed_client, account, "items:read")
    add = api_key_repository.add

    async def slow_add(session: AsyncSession, api_key: ApiKey) -> None:
        await asyncio.sleep(0.05)  # every request has counted before any inserts
        await add(session, api_key)

    monkeypatch.setattr(api_key_repository, "add", slow_add)
    answers = await asyncio.gather(
        *(
            committed_client.post(
                KEYS, json={"name": "race", "scopes": ["items:read"]}, headers=account.headers
            )
            for _ in range(8)
        )
    )
    assert sorted(answer.status_code for answer in answers) == [201] + [409] * 7
    listed = await committed_client.get(KEYS, headers=account.headers)
    assert len(listed.json()) == MAX_KEYS_PER_USER
