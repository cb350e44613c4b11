from __future__ import annotations

import re
from collections.abc import AsyncIterable
from typing import Annotated

from fastapi import APIRouter, Header, Query, WebSocket
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import BaseModel
from redis.exceptions import RedisError

from app.auth.dependencies import ApiKeyValue, authenticate_briefly
from app.auth.ratelimits import ApiBudget
from app.auth.scopes import Scope
from app.core.dependencies import ResourcesDep, SessionmakerDep
from app.core.errors import AppError, problem_responses
from app.realtime import websocket as ws
from app.realtime.dependencies import HubDep, ScopeQuery, SubscriptionDep
from app.realtime.hub import ConnectionLimitReached, Draining
from app.realtime.schemas import EVENT_ID_PATTERN, Event, EventScope

router = APIRouter(tags=["events"])

# Browsers reconnect an EventSource after this many milliseconds.
RECONNECT_MS = 2000

# Models the responses below refer to by `$ref` but FastAPI never sees (the stream
# yields `ServerSentEvent`s of pre-rendered JSON): app.main adds them to the components.
REFERENCED_MODELS: tuple[type[BaseModel], ...] = (Event,)

# One event of the stream, in the fields FastAPI's SSE `itemSchema` names (app.main
# restates it in OpenAPI 3.1 terms); `data` is an `Event` as JSON.
_EVENT_STREAM = {
    "description": "A stream of events: `event:` is the type, `id:` the event id, `data:` "
    "the `Event` as JSON; a `: ping` comment every 15 s keeps idle connections open.",
    "content": {
        "text/event-stream": {
            "itemSchema": {
                "type": "object",
                "required": ["data", "event", "id"],
                "properties": {
                    "data": {
                        "type": "string",
                        "contentMediaType": "application/json",
                        "contentSchema": {"$ref": "#/components/schemas/Event"},
                    },
                    "event": {"$ref": "#/components/schemas/EventType"},
                    "id": {"type": "string", "pattern": EVENT_ID_PATTERN, "maxLength": 41},
                },
            }
        }
    },
}


@router.get(
    "/events",
    response_class=EventSourceResponse,
    dependencies=[ApiBudget],
    responses={200: _EVENT_STREAM, **problem_responses(401, 403, 422, 429, 503)},
)
async def stream_events(
    subscription: SubscriptionDep,
    hub: HubDep,
    last_event_id: Annotated[
        str | None,
        Header(
            max_length=41,
            description="Resume after this event (browsers send it when they reconnect). "
            "A value that is not an event id of this service is ignored: the stream "
            "starts with what happens next, as the SSE specification lets a server do.",
        ),
    ] = None,
) -> AsyncIterable[ServerSentEvent]:
    """Your events as Server-Sent Events: `item.created`, `item.updated`, `item.deleted`,
    `job.completed`, `job.failed`, `file.uploaded`. Admins may ask for every user's with
    `scope=all`.

    The stream ends when the access token expires or the server restarts; reconnect
    with `Last-Event-ID` to receive what you missed (the last
    `REALTIME_HISTORY_SIZE` events are kept). Browsers' `EventSource` cannot send the
    `Authorization` header: use a fetch-based client, or the WebSocket endpoint.
    """
    if last_event_id is not None and not re.fullmatch(EVENT_ID_PATTERN, last_event_id):
        last_event_id = None
    yield ServerSentEvent(comment="connected", retry=RECONNECT_MS)
    async for envelope in hub.follow(subscription, last_event_id):
        yield ServerSentEvent(raw_data=envelope.text, id=envelope.id, event=envelope.type)


@router.websocket("/ws")
async def websocket_events(
    websocket: WebSocket,
    hub: HubDep,
    resources: ResourcesDep,
    maker: SessionmakerDep,
    api_key: ApiKeyValue,
    token: Annotated[
        str | None,
        Query(
            max_length=4096,
            description="The access token, for clients that cannot send "
            "`Sec-WebSocket-Protocol: bearer, <token>` (it then appears in URLs).",
        ),
    ] = None,
    scope: ScopeQuery = EventScope.own,
    last_event_id: Annotated[
        str | None, Query(pattern=EVENT_ID_PATTERN, description="Resume after this event.")
    ] = None,
) -> None:
    """Your events as JSON text frames (see `Event`). Authenticate with the
    subprotocols `bearer, <access token>` (preferred), `?token=`, or an `X-API-Key`
    header with the `events:read` scope (machine clients). Send
    `{"type": "ping"}` to get `{"type": "pong"}`. Close codes: 1008 for a missing,
    invalid or expired token, a forbidden scope or too many connections; 1001 when the
    server shuts down; 1003 for anything but a ping; 1009 for an oversized message;
    1013 when the client falls too far behind."""
    offered = websocket.scope.get("subprotocols") or []
    bearer = offered[1] if len(offered) == 2 and offered[0] == "bearer" else None
    await websocket.accept(subprotocol="bearer" if bearer else None)
    try:
        principal = await authenticate_briefly(
            websocket,
            bearer or token or "",
            resources=resources,
            maker=maker,
            api_key=api_key,
        )
    except AppError:
        await websocket.close(1008, "missing, invalid or expired access token")
        return
    if Scope.events_read not in principal.scopes:
        await websocket.close(1008, "this API key lacks the scope events:read")
        return
    everything = scope is EventScope.all
    if everything and not principal.actor.sees_everything:
        await websocket.close(1008, "only admins may subscribe to scope=all")
        return
    try:
        subscription = await hub.subscribe(
            principal.credential(everything=everything), expires_at=principal.token_expires_at
        )
    except Draining:
        await websocket.close(ws.GOING_AWAY.code, ws.GOING_AWAY.reason)
        return
    except ConnectionLimitReached as exc:
        await websocket.close(1008, f"at most {exc.limit} connections per user")
        return
    except (RedisError, OSError):
        await websocket.close(1011, "events are unavailable; retry shortly")
        return
    try:
        await ws.serve(
            websocket,
            hub,
            subscription,
            after=last_event_id,
            limits=resources.settings.realtime,
        )
    finally:
        await hub.unsubscribe(subscription)
