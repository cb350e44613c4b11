"""One request, one transaction, committed before the response is sent."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Item
from tests.factories import create_account


async def test_a_created_row_is_readable_as_soon_as_the_201_arrives(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    account = await create_account(client)
    response = await client.post(
        "/api/v1/items", json={"title": "x", "price": "1"}, headers=account.headers
    )
    assert response.status_code == 201
    assert await db.get(Item, response.json()["id"]) is not None


@pytest.mark.allow_server_errors
async def test_a_failed_commit_is_an_error_not_a_2xx(
    client: httpx.AsyncClient, db: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = await create_account(client)

    async def failing_commit(self: AsyncSession) -> None:
        msg = "the database refused the commit"
        raise RuntimeError(msg)

    monkeypatch.setattr(AsyncSession, "commit", failing_commit)
    response = await client.post(
        "/api/v1/items", json={"title": "x", "price": "1"}, headers=account.headers
    )
    monkeypatch.undo()
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    count = await db.scalar(select(func.count()).select_from(Item))
    assert count == 0
