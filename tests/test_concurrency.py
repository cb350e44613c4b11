"""Concurrent requests over real, separate connections: exactly one winner, never a 500."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
from sqlalchemy import func, select

from app.core.resources import Resources
from app.models import Item
from tests.factories import PASSWORD, create_account, create_item

ITEMS = "/api/v1/items"


async def test_concurrent_patches_with_one_if_match_have_one_winner(
    committed_client: httpx.AsyncClient,
) -> None:
    account = await create_account(committed_client)
    item = await create_item(committed_client, account)
    headers = account.headers | {"If-Match": '"1"'}
    responses = await asyncio.gather(
        *(
            committed_client.patch(
                f"{ITEMS}/{item['id']}", json={"title": f"t{n}"}, headers=headers
            )
            for n in range(50)
        )
    )
    assert Counter(r.status_code for r in responses) == {200: 1, 412: 49}
    final = await committed_client.get(f"{ITEMS}/{item['id']}", headers=account.headers)
    assert final.json()["version"] == 2


async def test_concurrent_patches_without_if_match_conflict_instead_of_412(
    committed_client: httpx.AsyncClient,
) -> None:
    account = await create_account(committed_client)
    item = await create_item(committed_client, account)
    responses = await asyncio.gather(
        *(
            committed_client.patch(
                f"{ITEMS}/{item['id']}", json={"title": f"t{n}"}, headers=account.headers
            )
            for n in range(10)
        )
    )
    statuses = Counter(r.status_code for r in responses)
    assert set(statuses) <= {200, 409}
    assert statuses[200] >= 1
    final = await committed_client.get(f"{ITEMS}/{item['id']}", headers=account.headers)
    assert final.json()["version"] == 1 + statuses[200]


async def test_concurrent_deletes_leave_one_204_and_404s(
    committed_client: httpx.AsyncClient,
) -> None:
    account = await create_account(committed_client)
    item = await create_item(committed_client, account)
    responses = await asyncio.gather(
        *(
            committed_client.delete(f"{ITEMS}/{item['id']}", headers=account.headers)
            for _ in range(8)
        )
    )
    assert Counter(r.status_code for r in responses) == {204: 1, 404: 7}


async def test_concurrent_creates_with_one_idempotency_key_make_one_item(
    committed_client: httpx.AsyncClient, resources: Resources
) -> None:
    account = await create_account(committed_client)
    headers = account.headers | {"Idempotency-Key": "burst"}
    responses = await asyncio.gather(
        *(
            committed_client.post(ITEMS, json={"title": "once", "price": "1"}, headers=headers)
            for _ in range(100)
        )
    )
    statuses = Counter(r.status_code for r in responses)
    assert set(statuses) <= {201, 409}
    assert len({r.json()["id"] for r in responses if r.status_code == 201}) == 1
    async with resources.sessionmaker() as session:
        count = await session.scalar(select(func.count()).select_from(Item))
    assert count == 1


async def test_concurrent_registrations_of_one_email_make_one_account(
    committed_client: httpx.AsyncClient,
) -> None:
    body = {"email": "race@example.com", "password": PASSWORD}
    responses = await asyncio.gather(
        *(committed_client.post("/api/v1/auth/register", json=body) for _ in range(100))
    )
    assert Counter(r.status_code for r in responses) == {201: 1, 409: 99}


async def test_two_users_racing_for_one_email_get_200_and_409(
    committed_client: httpx.AsyncClient,
) -> None:
    accounts = [await create_account(committed_client) for _ in range(2)]
    for round_number in range(5):
        wanted = f"wanted-{round_number}@example.com"
        responses = await asyncio.gather(
            *(
                committed_client.patch(
                    "/api/v1/users/me",
                    json={"email": wanted, "current_password": PASSWORD},
                    headers=account.headers,
                )
                for account in accounts
            )
        )
        assert sorted(r.status_code for r in responses) == [200, 409], round_number
        winner = next(a for a, r in zip(accounts, responses, strict=True) if r.status_code == 200)
        winner.email = wanted
