"""One request, one transaction, committed before the response is sent."""

from __future__ import annotations

import json

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.types import Message, Receive, Scope, Send

from app.core.dependencies import get_sessionmaker
from app.core.events import user_stream_key
from app.core.idempotency import Idempotency
from app.models import Item
from tests.conftest import ServedApp
from tests.factories import create_account


async def test_the_commit_happens_before_the_response_starts(
    served: ServedApp,
    sessionmaker: async_sessionmaker[AsyncSession],
    redis: Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client that got its 201 can read the row back at once, from any process."""
    events: list[str] = []
    real_commit = AsyncSession.commit

    async def recording_commit(self: AsyncSession) -> None:
        await real_commit(self)
        events.append("commit")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                events.append(f"response {message['status']}")
            await send(message)

        await served.asgi(scope, receive, recording_send)

    served.app.dependency_overrides[get_sessionmaker] = lambda: sessionmaker
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        ) as client:
            account = await create_account(client)
            monkeypatch.setattr(AsyncSession, "commit", recording_commit)
            events.clear()
            await client.post(
                "/api/v1/items", json={"title": "x", "price": "1"}, headers=account.headers
            )
    finally:
        served.app.dependency_overrides.clear()
    # (Authentication may commit a short read session of its own before.)
    response = events.index("response 201")
    assert events[response - 1] == "commit"
    assert "commit" not in events[response:]


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


@pytest.mark.allow_server_errors
async def test_a_failed_commit_frees_the_idempotency_key(
    client: httpx.AsyncClient, db: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A retry after a rolled-back create creates; it never replays a phantom 201."""
    account = await create_account(client)
    headers = account.headers | {"Idempotency-Key": "retry-after-failure"}

    async def failing_commit(self: AsyncSession) -> None:
        msg = "the database refused the commit"
        raise RuntimeError(msg)

    monkeypatch.setattr(AsyncSession, "commit", failing_commit)
    failed = await client.post("/api/v1/items", json={"title": "x", "price": "1"}, headers=headers)
    monkeypatch.undo()
    retried = await client.post("/api/v1/items", json={"title": "x", "price": "1"}, headers=headers)
    assert failed.status_code == 500
    assert retried.status_code == 201
    assert "idempotent-replayed" not in retried.headers
    assert await db.get(Item, retried.json()["id"]) is not None


async def test_a_failing_after_commit_step_neither_undoes_the_answer_nor_skips_the_rest(
    client: httpx.AsyncClient, db: AsyncSession, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The idempotency record is stored first after the commit; Redis failing there
    must not turn the committed 201 into an error or skip the item's event and cache."""
    account = await create_account(client)

    async def unreachable(self: Idempotency) -> None:
        msg = "Redis went away"
        raise ConnectionError(msg)

    monkeypatch.setattr(Idempotency, "store", unreachable)
    created = await client.post(
        "/api/v1/items",
        json={"title": "x", "price": "1"},
        headers=account.headers | {"Idempotency-Key": "k-after-commit"},
    )
    monkeypatch.undo()
    assert created.status_code == 201
    assert await db.get(Item, created.json()["id"]) is not None
    # The event was still published: the steps after the failing one ran.
    [(_, fields)] = await redis.xrange(user_stream_key(account.id))
    assert fields["type"] == "item.created"
    assert json.loads(fields["data"])["id"] == created.json()["id"]
