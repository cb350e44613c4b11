from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from tests.factories import Account, create_account, create_admin, create_item

ITEMS = "/api/v1/items"


async def _walk(client: httpx.AsyncClient, account: Account, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = params | ({"cursor": cursor} if cursor else {})
        response = await client.get(ITEMS, params=query, headers=account.headers)
        assert response.status_code == 200, response.text
        page = response.json()
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


async def test_pages_visit_every_item_once_newest_first(client: httpx.AsyncClient) -> None:
    account = await create_account(client)
    created = [(await create_item(client, account, title=f"item {n}"))["id"] for n in range(7)]
    seen = [item["id"] for item in await _walk(client, account, limit=3)]
    assert seen == list(reversed(created))


async def test_inserts_during_a_walk_do_not_repeat_or_skip_existing_rows(
    client: httpx.AsyncClient,
) -> None:
    account = await create_account(client)
    existing = {(await create_item(client, account, title=f"item {n}"))["id"] for n in range(6)}
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get(ITEMS, params=params, headers=account.headers)).json()
        seen += [item["id"] for item in page["items"]]
        await create_item(client, account, title="inserted meanwhile")
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen))
    assert existing <= set(seen)


async def test_default_page_size_is_20(client: httpx.AsyncClient) -> None:
    account = await create_account(client)
    for n in range(21):
        await create_item(client, account, title=f"item {n}")
    page = (await client.get(ITEMS, headers=account.headers)).json()
    assert len(page["items"]) == 20
    assert page["next_cursor"] is not None


@pytest.mark.parametrize("limit", [0, -1, 101, "ten"])
async def test_limit_out_of_range_is_422(client: httpx.AsyncClient, limit: int | str) -> None:
    account = await create_account(client)
    response = await client.get(ITEMS, params={"limit": limit}, headers=account.headers)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "query.limit"


@pytest.mark.parametrize("cursor", ["!!!", "abc", "x" * 65, "AAAA"])
async def test_malformed_cursor_is_422(client: httpx.AsyncClient, cursor: str) -> None:
    account = await create_account(client)
    response = await client.get(ITEMS, params={"cursor": cursor}, headers=account.headers)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "query.cursor"


async def test_users_see_only_their_items_and_admins_see_all(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    alice = await create_account(client)
    bob = await create_account(client)
    admin = await create_admin(client, db)
    alices = await create_item(client, alice)
    bobs = await create_item(client, bob)
    assert [item["id"] for item in await _walk(client, alice)] == [alices["id"]]
    assert [item["id"] for item in await _walk(client, bob)] == [bobs["id"]]
    everything = {item["id"] for item in await _walk(client, admin)}
    assert {alices["id"], bobs["id"]} <= everything


async def test_filters(client: httpx.AsyncClient) -> None:
    account = await create_account(client)
    lamp = await create_item(
        client, account, title="Brass lamp", description="A reading lamp", price="40",
        status="active", tags=["home", "light"],
    )  # fmt: skip
    chair = await create_item(
        client, account, title="Oak chair", description="Solid wood", price="120",
        status="active", tags=["home"],
    )  # fmt: skip
    draft = await create_item(client, account, title="Lamps", price="5", tags=["light"])

    async def ids(**params: Any) -> set[str]:
        return {item["id"] for item in await _walk(client, account, **params)}

    assert await ids(q="lamp") == {lamp["id"], draft["id"]}  # stemming: lamps ~ lamp
    assert await ids(q="reading") == {lamp["id"]}
    assert await ids(q="wood -oak") == set()
    assert await ids(status="active") == {lamp["id"], chair["id"]}
    assert await ids(tag="home") == {lamp["id"], chair["id"]}
    assert await ids(tag=["home", "light"]) == {lamp["id"]}
    assert await ids(tag="HOME") == {lamp["id"], chair["id"]}
    assert await ids(min_price="40") == {lamp["id"], chair["id"]}
    assert await ids(max_price="40") == {lamp["id"], draft["id"]}
    assert await ids(min_price="10", max_price="100", status="active") == {lamp["id"]}
    assert await ids(tag="nothing-has-this") == set()
    # Both bounds are inclusive; a minimum above the maximum is an empty range.
    assert await ids(min_price="40", max_price="40.00") == {lamp["id"]}
    assert await ids(min_price="10", max_price="5") == set()


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"min_price": "1E1"}, "query.min_price"),
        ({"cursor": "A" * 21 + "B"}, "query.cursor"),
        ({"status": "sold"}, "query.status"),
        ({"min_price": "-1"}, "query.min_price"),
        ({"q": "x" * 201}, "query.q"),
    ],
)
async def test_invalid_filters_are_422(
    client: httpx.AsyncClient, params: dict[str, str], field: str
) -> None:
    account = await create_account(client)
    response = await client.get(ITEMS, params=params, headers=account.headers)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == field


async def test_the_stream_sends_every_item_as_json_lines(client: httpx.AsyncClient) -> None:
    account, other = await create_account(client), await create_account(client)
    mine = [await create_item(client, account, title=f"Lamp {n}") for n in range(105)]
    await create_item(client, other, title="Not yours")
    response = await client.get("/api/v1/items/stream", headers=account.headers)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/jsonl"
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert lines == mine[::-1]  # newest first, across the batches of 100
    filtered = await client.get(
        "/api/v1/items/stream", params={"q": "lamp 7"}, headers=account.headers
    )
    assert [json.loads(line)["title"] for line in filtered.text.splitlines()] == ["Lamp 7"]
