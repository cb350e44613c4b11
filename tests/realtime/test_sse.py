"""`GET /api/v1/events` (Server-Sent Events) against a live server, read with httpx."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from app.core.resources import Resources
from tests.conftest import ServedApp
from tests.factories import Account, create_account, create_item
from tests.live import SseEvent, sse_events
from tests.realtime.conftest import (
    MAX_CONNECTIONS,
    RECHECK_SECONDS,
    Cluster,
    demote,
    live_account,
    promote,
)

EVENTS = "/api/v1/events"


@contextlib.asynccontextmanager
async def stream(
    base_url: str, account: Account, *, path: str = EVENTS, **headers: str
) -> AsyncIterator[AsyncIterator[SseEvent]]:
    """The events of an open stream, after its opening `connected` comment."""
    async with (
        httpx.AsyncClient(base_url=base_url, timeout=10) as client,
        client.stream("GET", path, headers=account.headers | headers) as response,
    ):
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response)
        opening = await anext(events)
        assert (opening.comments, opening.retry) == (["connected"], 2000)
        yield events


async def next_event(events: AsyncIterator[SseEvent], *, within: float = 5) -> SseEvent:
    async with asyncio.timeout(within):
        return await anext(events)


def body(event: SseEvent) -> dict[str, Any]:
    parsed: dict[str, Any] = event.json()
    assert (parsed["id"], parsed["type"]) == (event.id, event.event)
    return parsed


async def test_the_stream_needs_a_bearer_token(cluster: Cluster, api: httpx.AsyncClient) -> None:
    response = await api.get(EVENTS)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"] == "Bearer"


async def test_own_events_arrive_with_their_id_and_type(
    cluster: Cluster, api: httpx.AsyncClient
) -> None:
    owner, other = await live_account(api), await live_account(api)
    async with stream(cluster.b.url, owner) as events:
        await create_item(api, other)
        item = await create_item(api, owner, title="Green tent")
        event = await next_event(events)
    assert event.event == "item.created"
    assert body(event)["data"] == item


async def test_last_event_id_resumes_after_the_last_event_seen(
    cluster: Cluster, api: httpx.AsyncClient
) -> None:
    owner = await live_account(api)
    async with stream(cluster.a.url, owner) as events:
        await create_item(api, owner, title="Seen")
        seen = await next_event(events)
    missed = [await create_item(api, owner, title=f"Missed {n}") for n in range(2)]
    assert seen.id is not None
    async with stream(cluster.b.url, owner, **{"Last-Event-ID": seen.id}) as events:
        replayed = [body(await next_event(events))["data"] for _ in missed]
    assert replayed == missed


async def test_a_malformed_last_event_id_is_ignored(
    cluster: Cluster, api: httpx.AsyncClient
) -> None:
    # Not an id this service sent: nothing to resume from, so the stream starts live.
    owner = await live_account(api)
    async with stream(cluster.a.url, owner, **{"Last-Event-ID": "yesterday"}) as events:
        created = await create_item(api, owner)
        assert body(await next_event(events))["data"]["id"] == created["id"]


async def test_scope_all_is_for_admins_only(
    cluster: Cluster, api: httpx.AsyncClient, resources: Resources
) -> None:
    admin, user = await live_account(api), await live_account(api)
    refused = await api.get(EVENTS, params={"scope": "all"}, headers=user.headers)
    assert refused.status_code == 403
    await promote(resources, admin)
    async with stream(cluster.a.url, admin, path=f"{EVENTS}?scope=all") as events:
        item = await create_item(api, user)
        assert body(await next_event(events))["data"] == item


async def test_one_connection_too_many_is_429(cluster: Cluster, api: httpx.AsyncClient) -> None:
    account = await live_account(api)
    async with contextlib.AsyncExitStack() as held:
        for server in (cluster.a, cluster.b, cluster.a)[:MAX_CONNECTIONS]:
            await held.enter_async_context(stream(server.url, account))
        refused = await api.get(EVENTS, headers=account.headers)
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "5"
        assert refused.json()["type"] == "urn:problem:too-many-connections"
    async with stream(cluster.b.url, account):
        pass  # the places are free again


async def test_idle_streams_get_keep_alive_comments(
    served: ServedApp, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FastAPI sends `: ping` every 15 s on an idle stream; made 50 ms here. Raw ASGI, since
    httpx's ASGI transport does not stream."""
    monkeypatch.setattr("fastapi.routing._PING_INTERVAL", 0.05)
    account = await create_account(client)
    bodies: list[bytes] = []
    disconnect = asyncio.Event()

    async def receive() -> dict[str, Any]:
        await disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            bodies.append(message.get("body", b""))
            if b": ping\n\n" in bodies:
                disconnect.set()

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": EVENTS,
        "raw_path": EVENTS.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"authorization", f"Bearer {account.access_token}".encode())],
        "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
        "state": {},
    }
    async with asyncio.timeout(5):
        await served.asgi(scope, receive, send)  # type: ignore[arg-type]
    assert bodies[0].startswith(b": connected")
    assert b": ping\n\n" in bodies


async def _ended(events: AsyncIterator[SseEvent]) -> bool:
    """Whether the stream ends (rather than sending anything) within a few seconds."""
    async with asyncio.timeout(RECHECK_SECONDS + 5):
        async for event in events:
            if event.comments != ["ping"]:
                return False
    return True


async def test_logging_out_ends_the_stream_opened_with_that_token(
    cluster: Cluster, api: httpx.AsyncClient
) -> None:
    account = await live_account(api)
    async with stream(cluster.a.url, account) as events:
        ended = await api.post(
            "/api/v1/auth/logout",
            json={"refresh_token": account.refresh_token},
            headers=account.headers,
        )
        assert ended.status_code == 204
        assert await _ended(events)


async def test_a_demoted_admin_loses_the_stream_of_everything(
    cluster: Cluster, api: httpx.AsyncClient, resources: Resources
) -> None:
    admin = await live_account(api)
    await promote(resources, admin)
    async with stream(cluster.a.url, admin, path=f"{EVENTS}?scope=all") as events:
        await demote(resources, admin)
        assert await _ended(events)
