"""The hub of this process, and a subscription that lives as long as its SSE stream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Query
from starlette.requests import HTTPConnection

from app.auth.dependencies import EventsReader
from app.core.errors import Forbidden, ServiceUnavailable, TooManyRequests
from app.realtime.hub import ConnectionLimitReached, Draining, EventHub, Subscription
from app.realtime.schemas import EventScope


async def get_hub(connection: HTTPConnection) -> EventHub:
    hub: EventHub = connection.state.hub
    return hub


HubDep = Annotated[EventHub, Depends(get_hub)]

ScopeQuery = Annotated[
    EventScope,
    Query(description="`all`: every user's events (admins only); `own` (default): yours."),
]


class TooManyConnections(TooManyRequests):
    code = "too-many-connections"


async def open_subscription(
    principal: EventsReader, hub: HubDep, scope: ScopeQuery = EventScope.own
) -> AsyncIterator[Subscription]:
    """Subscribe for the caller; released when the response (the stream) has ended."""
    everything = scope is EventScope.all
    if everything and not principal.actor.sees_everything:
        raise Forbidden("Only admins may subscribe to every user's events")
    try:
        subscription = await hub.subscribe(
            principal.credential(everything=everything), expires_at=principal.token_expires_at
        )
    except Draining as exc:
        raise ServiceUnavailable("The server is restarting; reconnect", retry_after=1) from exc
    except ConnectionLimitReached as exc:
        raise TooManyConnections(
            f"You already hold {exc.limit} realtime connections; close one first",
            retry_after=5,
        ) from exc
    try:
        yield subscription
    finally:
        await hub.unsubscribe(subscription)


SubscriptionDep = Annotated[Subscription, Depends(open_subscription)]
