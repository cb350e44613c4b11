"""The WebSocket protocol of `/api/v1/ws`, once the connection is authenticated.

Two tasks per connection: one sends the subscription's events (each a JSON text
frame), the other reads what the client sends, which may only be `{"type": "ping"}`
(answered with `{"type": "pong"}`). Whichever ends first ends the connection, with:

| code | when |
|---|---|
| 1001 going away | the server is shutting down |
| 1003 unsupported data | a binary frame, non-JSON text or an unknown message |
| 1008 policy violation | the access token expired (reconnect with a fresh one) |
| 1009 message too big | a client message above REALTIME_MAX_MESSAGE_BYTES |
| 1013 try again later | the client did not keep up with its events (reconnect, resume) |
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import WebSocket
from starlette.websockets import WebSocketDisconnect

from app.core.config import RealtimeSettings
from app.realtime.hub import CloseReason, EventHub, Subscription

PONG = json.dumps({"type": "pong"})


@dataclass(frozen=True, slots=True)
class Close:
    code: int
    reason: str


GOING_AWAY = Close(1001, "server shutting down")
UNSUPPORTED = Close(1003, 'only {"type": "ping"} text messages are accepted')
TOKEN_EXPIRED = Close(1008, "access token expired")
REVOKED = Close(
    1008, "credential revoked: the key was deleted, the token logged out or the account disabled"
)
TOO_BIG = Close(1009, "message too big")
TOO_SLOW = Close(1013, "too slow: reconnect and resume with last_event_id")

_ON_CLOSE = {
    CloseReason.going_away: GOING_AWAY,
    CloseReason.too_slow: TOO_SLOW,
    CloseReason.expired: TOKEN_EXPIRED,
    CloseReason.revoked: REVOKED,
}

Send = Callable[[str], Awaitable[None]]


async def serve(
    websocket: WebSocket,
    hub: EventHub,
    subscription: Subscription,
    *,
    after: str | None,
    limits: RealtimeSettings,
) -> None:
    lock = asyncio.Lock()

    async def send(text: str) -> None:
        # A client that stops reading blocks the send once the buffers are full.
        async with lock, asyncio.timeout(limits.send_timeout_seconds):
            await websocket.send_text(text)

    tasks = {
        asyncio.create_task(_send_events(hub, subscription, after, send)),
        asyncio.create_task(_receive(websocket, send, limits.max_message_bytes)),
    }
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    close = next(iter(done)).result()
    if close is not None:
        with contextlib.suppress(Exception):  # the client may be gone already
            async with asyncio.timeout(limits.send_timeout_seconds):
                await websocket.close(close.code, close.reason)


async def _send_events(
    hub: EventHub, subscription: Subscription, after: str | None, send: Send
) -> Close | None:
    try:
        async for envelope in hub.follow(subscription, after):
            await send(envelope.text)
    except TimeoutError:
        return TOO_SLOW
    except (WebSocketDisconnect, RuntimeError, OSError):
        return None  # the client went away
    return _ON_CLOSE[subscription.reason or CloseReason.going_away]


async def _receive(websocket: WebSocket, send: Send, max_bytes: int) -> Close | None:
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return None
        text = message.get("text")
        if text is None:
            return UNSUPPORTED
        if len(text.encode()) > max_bytes:
            return TOO_BIG
        try:
            parsed = json.loads(text)
        except ValueError:
            return UNSUPPORTED
        if not isinstance(parsed, dict) or parsed.get("type") != "ping":
            return UNSUPPORTED
        try:
            await send(PONG)
        except TimeoutError:
            return TOO_SLOW
