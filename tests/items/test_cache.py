"""GET /items/{id} answers from Redis, and no read is ever stale after a write."""

from __future__ import annotations

import httpx
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import Settings
from app.core.resources import Resources
from app.items.events import cache_key
from app.models import Item
from tests.conftest import app_client
from tests.factories import PASSWORD, create_account, create_admin, create_item
from tests.files.conftest import upload_one

ITEMS = "/api/v1/items"


async def test_reads_come_from_the_cache_once_filled(
    client: httpx.AsyncClient, db: AsyncSession, resources: Resources
) -> None:
    account = await create_account(client)
    item = await create_item(client, account)
    url = f"{ITEMS}/{item['id']}"
    first = await client.get(url, headers=account.headers)
    assert first.json() == item
    assert await resources.redis.exists(cache_key(item["id"]))
    # A change behind the service's back is not seen: the answer is the cached one.
    await db.execute(update(Item).where(Item.id == item["id"]).values(title="Sneaky"))
    await db.commit()
    cached = await client.get(url, headers=account.headers)
    assert cached.json() == item
    assert cached.headers["etag"] == first.headers["etag"]


async def test_no_stale_read_follows_a_write(client: httpx.AsyncClient) -> None:
    account = await create_account(client)
    item = await create_item(client, account)
    url = f"{ITEMS}/{item['id']}"
    await client.get(url, headers=account.headers)  # cached

    patched = await client.patch(url, json={"title": "Blue lamp"}, headers=account.headers)
    read = await client.get(url, headers=account.headers)
    assert read.json() == patched.json()
    assert read.json()["title"] == "Blue lamp"
    assert read.headers["etag"] == patched.headers["etag"]

    replaced = await client.put(
        url, json={"title": "Green lamp", "price": "1.00"}, headers=account.headers
    )
    assert (await client.get(url, headers=account.headers)).json() == replaced.json()

    file = await upload_one(client, account, ("a.txt", b"a", "text/plain"))
    attached = await client.post(
        f"{url}/attachments", json={"file_id": file["id"]}, headers=account.headers
    )
    assert (await client.get(url, headers=account.headers)).json() == attached.json()

    await client.delete(f"/api/v1/files/{file['id']}", headers=account.headers)
    detached = (await client.get(url, headers=account.headers)).json()
    assert detached["attachments"] == []
    assert detached["version"] == attached.json()["version"] + 1

    assert (await client.delete(url, headers=account.headers)).status_code == 204
    assert (await client.get(url, headers=account.headers)).status_code == 404


async def test_a_cached_item_is_still_404_for_another_user(client: httpx.AsyncClient) -> None:
    owner, other = await create_account(client), await create_account(client)
    item = await create_item(client, owner)
    await client.get(f"{ITEMS}/{item['id']}", headers=owner.headers)  # cached
    response = await client.get(f"{ITEMS}/{item['id']}", headers=other.headers)
    assert response.status_code == 404


async def test_a_deleted_owners_items_leave_the_cache(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    admin, user = await create_admin(client, db), await create_account(client)
    item = await create_item(client, user)
    url = f"{ITEMS}/{item['id']}"
    assert (await client.get(url, headers=admin.headers)).status_code == 200  # cached
    deleted = await client.request(
        "DELETE", "/api/v1/users/me", json={"current_password": PASSWORD}, headers=user.headers
    )
    assert deleted.status_code == 204
    assert (await client.get(url, headers=admin.headers)).status_code == 404


async def test_an_older_version_never_replaces_a_newer_one(resources: Resources) -> None:
    cache = resources.cache
    await cache.store("cache:item:x", 2, 'owner|{"version": 2}')
    await cache.store("cache:item:x", 1, 'owner|{"version": 1}')  # a slow reader
    entry = await cache.get("cache:item:x")
    assert entry is not None
    assert (entry.version, entry.value) == (2, 'owner|{"version": 2}')
    await cache.forget("cache:item:x")
    await cache.store("cache:item:x", 3, "owner|{}")  # a fill after the deletion
    assert await cache.get("cache:item:x") is None


async def test_a_page_is_built_from_the_cached_bodies_at_their_stored_version(
    client: httpx.AsyncClient, db: AsyncSession, resources: Resources
) -> None:
    account = await create_account(client)
    items = [await create_item(client, account, title=f"Lamp {n}") for n in range(3)]
    await resources.redis.flushdb()  # nothing cached: every body comes from PostgreSQL
    first = await client.get(ITEMS, headers=account.headers)
    assert first.status_code == 200
    assert first.json() == {"items": items[::-1], "next_cursor": None}
    # The page filled the cache with exactly what GET /items/{id} answers.
    for item in items:
        assert (await client.get(f"{ITEMS}/{item['id']}", headers=account.headers)).json() == item

    # A cached body at the stored version is used as it is; one at an older version is
    # not: here the stored row moved on behind the cache's back.
    await db.execute(
        update(Item)
        .where(Item.id == items[0]["id"])
        .values(title="Sneaky", version=Item.version + 1)
    )
    await db.commit()
    page = (await client.get(ITEMS, headers=account.headers)).json()["items"]
    assert [entry["title"] for entry in page] == ["Lamp 2", "Lamp 1", "Sneaky"]
    assert page[2]["version"] == items[0]["version"] + 1
    # ...and the newer body replaced the older one in the cache.
    read = await client.get(f"{ITEMS}/{items[0]['id']}", headers=account.headers)
    assert read.json() == page[2]


async def test_a_page_from_the_cache_keeps_its_cursor_and_owner(client: httpx.AsyncClient) -> None:
    owner, other = await create_account(client), await create_account(client)
    items = [await create_item(client, owner, title=f"Lamp {n}") for n in range(3)]
    await create_item(client, other, title="Not yours")
    for item in items:
        await client.get(f"{ITEMS}/{item['id']}", headers=owner.headers)  # all cached

    first = (await client.get(ITEMS, params={"limit": 2}, headers=owner.headers)).json()
    assert first["items"] == items[:0:-1]
    rest = await client.get(
        ITEMS, params={"limit": 2, "cursor": first["next_cursor"]}, headers=owner.headers
    )
    assert rest.json() == {"items": [items[0]], "next_cursor": None}
    assert (await client.get(ITEMS, headers=other.headers)).json()["items"][0]["title"] == (
        "Not yours"
    )


async def test_with_the_cache_off_a_page_is_the_same(
    settings: Settings, committed: Resources
) -> None:
    async with app_client(settings.model_copy(update={"item_cache_seconds": 0})) as http:
        account = await create_account(http)
        items = [await create_item(http, account, title=f"Lamp {n}") for n in range(3)]
        first = await http.get(ITEMS, params={"limit": 2}, headers=account.headers)
        assert first.json()["items"] == items[:0:-1]
        rest = await http.get(
            ITEMS,
            params={"limit": 2, "cursor": first.json()["next_cursor"]},
            headers=account.headers,
        )
        assert rest.json() == {"items": [items[0]], "next_cursor": None}
    assert not await committed.redis.exists(cache_key(items[0]["id"]))
