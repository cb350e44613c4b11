"""SIGTERM: WebSocket clients get 1001, SSE streams end, the process exits 0."""

from __future__ import annotations

import asyncio
import signal
import time

import httpx
from websockets.asyncio.client import connect

from tests.live import start_server
from tests.realtime.conftest import Cluster, live_account
from tests.realtime.test_sse import stream
from tests.realtime.test_websocket import bearer, closed_with, nothing_pending


async def test_sigterm_says_goodbye_to_every_realtime_client(
    cluster: Cluster, api: httpx.AsyncClient
) -> None:
    owner = await live_account(api)
    server = await start_server(cluster.env)
    try:
        async with (
            connect(server.ws_url, subprotocols=bearer(owner)) as ws,
            stream(server.url, owner) as events,
        ):
            await nothing_pending(ws)
            started = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            assert await closed_with(ws) == (1001, "server shutting down")
            async with asyncio.timeout(5):
                rest = [event async for event in events]
            assert rest == []  # the stream ended cleanly, without an error
        code = await asyncio.to_thread(server.process.wait, 10)
        assert code == 0
        assert time.monotonic() - started < 5
    finally:
        server.stop(grace=1)
