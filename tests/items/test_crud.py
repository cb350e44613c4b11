from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Item
from tests.factories import create_account, create_admin, create_item

ITEMS = "/api/v1/items"


async def test_create_answers_201_with_location_and_etag(client: httpx.AsyncClient) -> None:
    account = await create_account(client)
    response = await client.post(
        ITEMS,
        json={
            "title": "  Red lamp ",
            "description": "Bright",
            "price": 12.5,
            "status": "active",
            "tags": ["Home", "sale", "home"],
        },
        headers=account.headers,
    )
    assert response.status_code == 201
    item = response.json()
    assert set(item) == {
        "id", "title", "description", "price", "status", "tags", "attachments", "owner_id",
        "created_at", "updated_at", "version",
    }  # fmt: skip
    assert item["attachments"] == []
    assert item["title"] == "Red lamp"
    assert item["price"] == "12.50"
    assert item["tags"] == ["home", "sale"]
    assert item["owner_id"] == str(account.id)
    assert item["version"] == 1
    assert response.headers["location"] == f"http://testserver{ITEMS}/{item['id']}"
    assert response.headers["etag"] == '"1"'
    read = await client.get(response.headers["location"], headers=account.headers)
    assert read.json() == item


async def test_defaults_for_optional_fields(client: httpx.AsyncClient) -> None:
    account = await create_account(client)
    item = await create_item(client, account)
    assert item["status"] == "draft"
    assert item["description"] is None
    assert item["tags"] == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"price": "1.00"}, "body.title"),
        ({"title": "x", "price": "-1"}, "body.price"),
        ({"title": "x", "price": "1.001"}, "body.price"),
        ({"title": "x", "price": "1e20"}, "body.price"),
        ({"title": "", "price": "1"}, "body.title"),
        ({"title": "x" * 201, "price": "1"}, "body.title"),
        ({"title": "x", "price": "1", "status": "sold"}, "body.status"),
        ({"title": "x", "price": "1", "tags": ["a"] * 21}, "body.tags"),
        ({"title": "x", "price": "1", "tags": ["bad/tag"]}, "body.tags.0"),
        (
            {"title": "x", "price": "1", "owner_id": "00000000-0000-7000-8000-000000000000"},
            "body.owner_id",
        ),
        ({"title": "x", "price": "1", "version": 7}, "body.version"),
    ],
)
async def test_invalid_bodies_are_422_and_name_the_field(
    client: httpx.AsyncClient, body: dict[str, object], field: str
) -> None:
    account = await create_account(client)
    response = await client.post(ITEMS, json=body, headers=account.headers)
    assert response.status_code == 422
    assert field in [error["field"] for error in response.json()["errors"]]


async def test_conditional_get_answers_304_while_the_etag_matches(
    client: httpx.AsyncClient,
) -> None:
    account = await create_account(client)
    item = await create_item(client, account)
    path = f"{ITEMS}/{item['id']}"
    first = await client.get(path, headers=account.headers)
    etag = first.headers["etag"]
    assert first.headers["cache-control"] == "private, no-cache"
    cached = await client.get(path, headers=account.headers | {"If-None-Match": etag})
    assert cached.status_code == 304
    assert cached.content == b""
    assert cached.headers["etag"] == etag
    assert cached.headers["cache-control"] == "private, no-cache"
    weak = await client.get(path, headers=account.headers | {"If-None-Match": f"W/{etag}"})
    assert weak.status_code == 304
    await client.patch(path, json={"title": "Blue lamp"}, headers=account.headers)
    changed = await client.get(path, headers=account.headers | {"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["etag"] == '"2"'


async def test_put_replaces_and_bumps_the_version(client: httpx.AsyncClient) -> None:
    account = await create_account(client)
    item = await create_item(client, account, description="old", tags=["a"])
    response = await client.put(
        f"{ITEMS}/{item['id']}",
        json={"title": "New", "price": "3"},
        headers=account.headers | {"If-Match": '"1"'},
    )
    assert response.status_code == 200
    body = response.json()
    assert (body["title"], body["price"], body["description"], body["tags"]) == (
        "New",
        "3.00",
        None,
        [],
    )
    assert body["version"] == 2
    assert response.headers["etag"] == '"2"'


async def test_patch_changes_only_what_was_sent(client: httpx.AsyncClient) -> None:
    account = await create_account(client)
    item = await create_item(client, account, description="keep me", tags=["x"])
    response = await client.patch(
        f"{ITEMS}/{item['id']}", json={"price": "99.9"}, headers=account.headers
    )
    assert response.status_code == 200
    body = response.json()
    assert (body["title"], body["description"], body["tags"], body["price"]) == (
        "Red lamp", "keep me", ["x"], "99.90",
    )  # fmt: skip
    assert body["version"] == 2


async def test_patch_of_only_the_tags_bumps_the_version(client: httpx.AsyncClient) -> None:
    account = await create_account(client)
    item = await create_item(client, account, tags=["x"])
    response = await client.patch(
        f"{ITEMS}/{item['id']}", json={"tags": ["y", "x"]}, headers=account.headers
    )
    assert response.json()["tags"] == ["x", "y"]
    assert response.json()["version"] == 2


async def test_patch_that_changes_nothing_keeps_the_version(client: httpx.AsyncClient) -> None:
    account = await create_account(client)
    item = await create_item(client, account)
    response = await client.patch(
        f"{ITEMS}/{item['id']}", json={"title": "Red lamp"}, headers=account.headers
    )
    assert response.json()["version"] == 1


async def test_patch_cannot_null_a_required_field(client: httpx.AsyncClient) -> None:
    account = await create_account(client)
    item = await create_item(client, account)
    response = await client.patch(
        f"{ITEMS}/{item['id']}", json={"title": None}, headers=account.headers
    )
    assert response.status_code == 422


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
async def test_stale_if_match_is_412_and_changes_nothing(
    client: httpx.AsyncClient, db: AsyncSession, method: str
) -> None:
    account = await create_account(client)
    item = await create_item(client, account)
    await client.patch(f"{ITEMS}/{item['id']}", json={"title": "v2"}, headers=account.headers)
    body = {"title": "stale", "price": "1"} if method != "DELETE" else None
    response = await client.request(
        method, f"{ITEMS}/{item['id']}", json=body, headers=account.headers | {"If-Match": '"1"'}
    )
    assert response.status_code == 412
    assert response.headers["content-type"] == "application/problem+json"
    stored = await db.scalar(select(Item).where(Item.id == item["id"]))
    assert stored is not None
    assert (stored.title, stored.version) == ("v2", 2)


async def test_if_match_star_and_lists_are_honoured(client: httpx.AsyncClient) -> None:
    account = await create_account(client)
    item = await create_item(client, account)
    path = f"{ITEMS}/{item['id']}"
    star = await client.patch(
        path, json={"title": "a"}, headers=account.headers | {"If-Match": "*"}
    )
    listed = await client.patch(
        path, json={"title": "b"}, headers=account.headers | {"If-Match": '"9", "2"'}
    )
    weak = await client.patch(
        path, json={"title": "c"}, headers=account.headers | {"If-Match": 'W/"3"'}
    )
    assert (star.status_code, listed.status_code, weak.status_code) == (200, 200, 412)


async def test_delete_then_get_is_404(client: httpx.AsyncClient) -> None:
    account = await create_account(client)
    item = await create_item(client, account)
    path = f"{ITEMS}/{item['id']}"
    assert (
        await client.delete(path, headers=account.headers | {"If-Match": '"1"'})
    ).status_code == 204
    assert (await client.get(path, headers=account.headers)).status_code == 404
    assert (await client.delete(path, headers=account.headers)).status_code == 404


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
async def test_another_users_item_is_404_like_a_missing_one(
    client: httpx.AsyncClient, db: AsyncSession, method: str
) -> None:
    owner = await create_account(client)
    intruder = await create_account(client)
    item = await create_item(client, owner)
    body = {"title": "mine now", "price": "0"} if method in ("PUT", "PATCH") else None
    theirs = await client.request(
        method, f"{ITEMS}/{item['id']}", json=body, headers=intruder.headers
    )
    missing = await client.request(
        method, f"{ITEMS}/00000000-0000-7000-8000-000000000000", json=body, headers=intruder.headers
    )
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json()["detail"] == missing.json()["detail"]
    stored = await db.scalar(select(Item).where(Item.id == item["id"]))
    assert stored is not None
    assert stored.title == "Red lamp"


async def test_admin_can_read_and_change_any_item(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    owner = await create_account(client)
    admin = await create_admin(client, db)
    item = await create_item(client, owner)
    path = f"{ITEMS}/{item['id']}"
    assert (await client.get(path, headers=admin.headers)).status_code == 200
    response = await client.patch(path, json={"status": "archived"}, headers=admin.headers)
    assert response.status_code == 200
    assert response.json()["owner_id"] == str(owner.id)


async def test_items_need_authentication(client: httpx.AsyncClient) -> None:
    assert (await client.get(ITEMS)).status_code == 401
    assert (await client.post(ITEMS, json={"title": "x", "price": "1"})).status_code == 401


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", ITEMS, {"title": "a\u0000b", "price": "1"}),
        ("GET", f"{ITEMS}?q=lamp%00", None),
    ],
)
async def test_a_nul_character_is_422_not_500(
    client: httpx.AsyncClient, method: str, path: str, body: dict[str, str] | None
) -> None:
    account = await create_account(client)
    response = await client.request(method, path, json=body, headers=account.headers)
    assert response.status_code == 422
