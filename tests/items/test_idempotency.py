from __future__ import annotations

import httpx
from redis.asyncio import Redis
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.idempotency import Idempotency, fingerprint
from app.models import Item
from tests.factories import Account, create_account

ITEMS = "/api/v1/items"
BODY = {"title": "Once only", "price": "10"}


async def _count(db: AsyncSession, account: Account) -> int:
    count = await db.scalar(
        select(func.count()).select_from(Item).where(Item.owner_id == account.id)
    )
    return int(count or 0)


async def test_a_repeat_replays_the_first_response_and_creates_nothing(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    account = await create_account(client)
    headers = account.headers | {"Idempotency-Key": "order-42"}
    first = await client.post(ITEMS, json=BODY, headers=headers)
    # Same JSON, different formatting and key order: still the same request.
    repeat = await client.post(
        ITEMS,
        content=b'{ "price": "10",  "title": "Once only" }',
        headers=headers | {"content-type": "application/json"},
    )
    assert first.status_code == repeat.status_code == 201
    assert repeat.json() == first.json()
    assert repeat.headers["location"] == first.headers["location"]
    assert repeat.headers["etag"] == first.headers["etag"]
    assert repeat.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert await _count(db, account) == 1


async def test_the_same_key_with_another_body_is_422(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    account = await create_account(client)
    headers = account.headers | {"Idempotency-Key": "order-43"}
    assert (await client.post(ITEMS, json=BODY, headers=headers)).status_code == 201
    other = await client.post(ITEMS, json=BODY | {"price": "11"}, headers=headers)
    assert other.status_code == 422
    assert other.json()["type"] == "urn:problem:idempotency-key-reused"
    assert await _count(db, account) == 1


async def test_keys_are_scoped_per_user(client: httpx.AsyncClient, db: AsyncSession) -> None:
    alice = await create_account(client)
    bob = await create_account(client)
    key = {"Idempotency-Key": "shared-key"}
    alices = await client.post(ITEMS, json=BODY, headers=alice.headers | key)
    bobs = await client.post(ITEMS, json=BODY, headers=bob.headers | key)
    assert alices.status_code == bobs.status_code == 201
    assert alices.json()["id"] != bobs.json()["id"]
    assert bobs.json()["owner_id"] == str(bob.id)


async def test_a_failed_request_frees_its_key(client: httpx.AsyncClient, db: AsyncSession) -> None:
    account = await create_account(client)
    headers = account.headers | {"Idempotency-Key": "retry-me"}
    invalid = await client.post(ITEMS, json={"title": "x"}, headers=headers)
    assert invalid.status_code == 422
    fixed = await client.post(ITEMS, json={"title": "x"} | {"price": "1"}, headers=headers)
    assert fixed.status_code == 201
    assert await _count(db, account) == 1


async def test_a_key_in_flight_is_409(client: httpx.AsyncClient, redis: Redis) -> None:
    account = await create_account(client)
    raw = b'{"title":"Once only","price":"10"}'
    in_flight = Idempotency(
        redis, scope=str(account.id), key="slow", fingerprint=fingerprint("POST", ITEMS, raw)
    )
    await in_flight.begin()  # another request holds the key and has not finished
    response = await client.post(
        ITEMS,
        content=raw,
        headers=account.headers | {"Idempotency-Key": "slow", "content-type": "application/json"},
    )
    assert response.status_code == 409


async def test_malformed_keys_are_422(client: httpx.AsyncClient) -> None:
    account = await create_account(client)
    for key in ("", "x" * 256, "has space"):
        response = await client.post(
            ITEMS, json=BODY, headers=account.headers | {"Idempotency-Key": key}
        )
        assert response.status_code == 422, key
