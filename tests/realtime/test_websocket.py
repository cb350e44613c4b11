"""`WS /api/v1/ws` against a live server, with the `websockets` client."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from app.core.events import render
from app.core.ids import uuid7
from app.core.resources import Resources
from app.core.security import TokenType
from tests.factories import Account, create_item
from tests.live import start_server
from tests.realtime.conftest import (
    MAX_CONNECTIONS,
    RECHECK_SECONDS,
    Cluster,
    live_account,
    promote,
)
from tests.waiting import wait_until


def bearer(account: Account) -> list[Any]:
    return ["bearer", account.access_token]


async def next_message(ws: ClientConnection, *, within: float = 5) -> dict[str, Any]:
    async with asyncio.timeout(within):
        message = await ws.recv()
    assert isinstance(message, str)
    parsed: dict[str, Any] = json.loads(message)
    return parsed


async def closed_with(ws: ClientConnection, *, within: float = 5) -> tuple[int, str]:
    """The close code and reason, asserting that no message came before the close."""
    async with asyncio.timeout(within):
        try:
            message = await ws.recv()
        except ConnectionClosed as closed:
            frame = closed.rcvd
        else:
            pytest.fail(f"expected a close, got a message: {message!r}")
    assert frame is not None, "closed without a close frame"
    return frame.code, frame.reason


async def nothing_pending(ws: ClientConnection) -> None:
    """The next message is the answer to a ping: no event was queued before it."""
    await ws.send(json.dumps({"type": "ping"}))
    assert await next_message(ws) == {"type": "pong"}


async def test_a_bearer_subprotocol_authenticates_and_ping_gets_pong(
    cluster: Cluster, api: httpx.AsyncClient
) -> None:
    account = await live_account(api)
    async with connect(cluster.a.ws_url, subprotocols=bearer(account)) as ws:
        assert ws.subprotocol == "bearer"
        await ws.send(json.dumps({"type": "ping"}))
        assert await next_message(ws) == {"type": "pong"}


async def test_the_handshake_echoes_the_request_id(
    cluster: Cluster, api: httpx.AsyncClient
) -> None:
    account = await live_account(api)
    async with connect(
        cluster.a.ws_url,
        subprotocols=bearer(account),
        additional_headers={"X-Request-ID": "ws-request-0001"},
    ) as ws:
        assert ws.response is not None
        assert ws.response.headers["X-Request-ID"] == "ws-request-0001"


async def test_a_token_query_parameter_authenticates(
    cluster: Cluster, api: httpx.AsyncClient
) -> None:
    account = await live_account(api)
    async with connect(f"{cluster.a.ws_url}?token={account.access_token}") as ws:
        await nothing_pending(ws)


async def test_a_token_in_the_url_never_reaches_the_log(
    cluster: Cluster, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    account = await live_account(api)
    log = tmp_path / "server.log"
    server = await start_server(cluster.env | {"LOG_LEVEL": "INFO"}, log_to=log)
    try:
        async with connect(f"{server.ws_url}?token={account.access_token}") as ws:
            await nothing_pending(ws)
    finally:
        server.stop()
    logged = log.read_text()
    assert "/api/v1/ws?[redacted]" in logged  # the line is there, without its query
    assert account.access_token not in logged
    assert account.access_token.split(".")[2] not in logged


@pytest.mark.parametrize("token", [None, "not-a-jwt", "expired", "refresh"])
async def test_a_missing_invalid_or_expired_token_closes_1008_before_any_event(
    cluster: Cluster, api: httpx.AsyncClient, resources: Resources, token: str | None
) -> None:
    account = await live_account(api)
    if token == "expired":
        token = resources.tokens.encode(
            TokenType.access,
            subject=str(account.id),
            jti=uuid7().hex,
            lifetime=timedelta(minutes=-5),
            claims={"ver": 0},
        ).token
    elif token == "refresh":
        token = account.refresh_token
    url = cluster.a.ws_url if token is None else f"{cluster.a.ws_url}?token={token}"
    async with connect(url) as ws:
        await create_item(api, account)  # an event that must never reach this socket
        code, reason = await closed_with(ws)
    assert code == 1008
    assert "token" in reason


async def test_events_carry_the_rest_body_and_go_to_their_owner_only(
    cluster: Cluster, api: httpx.AsyncClient
) -> None:
    owner, other = await live_account(api), await live_account(api)
    async with (
        connect(cluster.a.ws_url, subprotocols=bearer(owner)) as mine,
        connect(cluster.a.ws_url, subprotocols=bearer(other)) as theirs,
    ):
        item = await create_item(api, owner, title="Blue kettle", tags=["kitchen"])
        event = await next_message(mine)
        assert set(event) == {"id", "type", "ts", "data"}
        assert event["type"] == "item.created"
        assert event["data"] == item

        path = f"/api/v1/items/{item['id']}"
        updated = await api.patch(path, json={"price": "3.00"}, headers=owner.headers)
        event = await next_message(mine)
        assert (event["type"], event["data"]) == ("item.updated", updated.json())

        deleted = await api.delete(path, headers=owner.headers)
        assert deleted.status_code == 204
        event = await next_message(mine)
        assert (event["type"], event["data"]) == ("item.deleted", updated.json())

        await nothing_pending(theirs)
        own = await create_item(api, other)
        assert (await next_message(theirs))["data"]["id"] == own["id"]


async def test_a_write_that_fails_publishes_nothing(
    cluster: Cluster, api: httpx.AsyncClient
) -> None:
    owner = await live_account(api)
    item = await create_item(api, owner)
    async with connect(cluster.a.ws_url, subprotocols=bearer(owner)) as ws:
        stale = await api.patch(
            f"/api/v1/items/{item['id']}",
            json={"title": "Never"},
            headers=owner.headers | {"If-Match": '"99"'},
        )
        assert stale.status_code == 412
        await nothing_pending(ws)


async def test_an_admin_sees_everyone_only_with_scope_all(
    cluster: Cluster, api: httpx.AsyncClient, resources: Resources
) -> None:
    admin, user = await live_account(api), await live_account(api)
    await promote(resources, admin)
    async with (
        connect(f"{cluster.a.ws_url}?scope=all", subprotocols=bearer(admin)) as everything,
        connect(cluster.a.ws_url, subprotocols=bearer(admin)) as own,
    ):
        item = await create_item(api, user)
        assert (await next_message(everything))["data"] == item
        await nothing_pending(own)

    async with connect(f"{cluster.a.ws_url}?scope=all", subprotocols=bearer(user)) as ws:
        code, reason = await closed_with(ws)
    assert code == 1008
    assert "admins" in reason


async def test_resume_after_the_last_event_seen(cluster: Cluster, api: httpx.AsyncClient) -> None:
    owner = await live_account(api)
    async with connect(cluster.a.ws_url, subprotocols=bearer(owner)) as ws:
        await create_item(api, owner, title="First")
        seen = await next_message(ws)
    missed = [await create_item(api, owner, title=f"Missed {n}") for n in range(3)]
    url = f"{cluster.b.ws_url}?last_event_id={seen['id']}"
    async with connect(url, subprotocols=bearer(owner)) as ws:
        replayed = [await next_message(ws) for _ in missed]
        assert [event["data"]["id"] for event in replayed] == [item["id"] for item in missed]
        live = await create_item(api, owner, title="Live")
        assert (await next_message(ws))["data"]["id"] == live["id"]
        await nothing_pending(ws)


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ('{"type": "subscribe"}', 1003),
        ("not json", 1003),
        (b"\x00binary", 1003),
        ("x" * 5000, 1009),
    ],
)
async def test_unknown_or_oversized_messages_close_the_connection(
    cluster: Cluster, api: httpx.AsyncClient, message: str | bytes, code: int
) -> None:
    account = await live_account(api)
    async with connect(cluster.a.ws_url, subprotocols=bearer(account)) as ws:
        await ws.send(message)
        received, _ = await closed_with(ws)
    assert received == code


async def test_connections_per_user_are_limited_across_processes(
    cluster: Cluster, api: httpx.AsyncClient
) -> None:
    account = await live_account(api)
    servers = [cluster.a, cluster.b, cluster.a]
    held = [await connect(s.ws_url, subprotocols=bearer(account)) for s in servers]
    try:
        assert len(held) == MAX_CONNECTIONS
        for ws in held:
            await nothing_pending(ws)
        async with connect(cluster.b.ws_url, subprotocols=bearer(account)) as extra:
            code, reason = await closed_with(extra)
        assert code == 1008
        assert "connections" in reason
    finally:
        for ws in held:
            await ws.close()
    # Closing one frees its place.
    async with connect(cluster.b.ws_url, subprotocols=bearer(account)) as again:
        await nothing_pending(again)


def stalled_client(port: int, token: str) -> socket.socket:
    """A WebSocket client that completes the handshake and then never reads again, with
    a tiny receive window: the server's send buffers fill up behind it."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            "GET /api/v1/ws HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: bearer, {token}\r\n\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1)
    assert response.startswith(b"HTTP/1.1 101"), response
    return sock


async def test_a_client_that_stops_reading_is_dropped_and_others_carry_on(
    cluster: Cluster, api: httpx.AsyncClient, resources: Resources
) -> None:
    slow_owner, fast_owner = await live_account(api), await live_account(api)
    leases = f"realtime:connections:{slow_owner.id}"
    slow = await asyncio.to_thread(stalled_client, cluster.a.port, slow_owner.access_token)
    try:
        async with connect(cluster.a.ws_url, subprotocols=bearer(fast_owner)) as fast:
            await wait_until(lambda: resources.redis.zcard(leases))
            big = {"padding": "x" * 50_000}
            for _ in range(150):  # 7.5 MB: more than the kernel buffers hold
                await resources.events.publish([render(slow_owner.id, "item.updated", big)])
            item = await create_item(api, fast_owner)
            assert (await next_message(fast))["data"]["id"] == item["id"]
            # The server gave the stalled connection up (its subscription and lease are
            # gone) while the other client kept receiving.
            await wait_until(lambda: _no_leases(resources, leases), within=15)
            await nothing_pending(fast)
    finally:
        slow.close()


async def _no_leases(resources: Resources, key: str) -> bool:
    count: int = await resources.redis.zcard(key)
    return count == 0


async def test_an_api_key_needs_the_events_scope(cluster: Cluster, api: httpx.AsyncClient) -> None:
    account = await live_account(api)
    keys = {}
    for scopes in (["events:read"], ["items:read"]):
        created = await api.post(
            "/api/v1/users/me/api-keys",
            json={"name": "robot", "scopes": scopes},
            headers=account.headers,
        )
        keys[scopes[0]] = created.json()["key"]
    async with connect(
        cluster.a.ws_url, additional_headers={"X-API-Key": keys["events:read"]}
    ) as ws:
        item = await create_item(api, account)
        assert (await next_message(ws))["data"]["id"] == item["id"]
    async with connect(
        cluster.a.ws_url, additional_headers={"X-API-Key": keys["items:read"]}
    ) as ws:
        code, reason = await closed_with(ws)
    assert (code, reason) == (1008, "this API key lacks the scope events:read")


async def test_deleting_the_key_closes_its_open_websockets(
    cluster: Cluster, api: httpx.AsyncClient
) -> None:
    account = await live_account(api)
    created = await api.post(
        "/api/v1/users/me/api-keys",
        json={"name": "robot", "scopes": ["events:read"]},
        headers=account.headers,
    )
    key = created.json()
    async with connect(cluster.b.ws_url, additional_headers={"X-API-Key": key["key"]}) as ws:
        await nothing_pending(ws)
        deleted = await api.delete(
            f"/api/v1/users/me/api-keys/{key['id']}", headers=account.headers
        )
        assert deleted.status_code == 204
        code, reason = await closed_with(ws, within=RECHECK_SECONDS + 5)
    assert code == 1008
    assert reason.startswith("credential revoked")
