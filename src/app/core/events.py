"""Realtime events: published after the commit, fanned out through Redis streams.

An event is `{id, type, ts, data}`, where `data` is the body the REST API returns for
the object and `id` is the event's position in two Redis streams, written together by
one Lua call:

- `events:bus`, which every API process tails (`app.realtime.hub`) to hand each event
  to its own WebSocket and SSE clients, whichever process or worker published it;
- `events:user:<id>`, the owner's bounded history, from which a client that reconnects
  resumes after the last id it saw (`Last-Event-ID`).

Both carry the same id (the bus assigns it; the user stream takes it explicitly, which
works because every entry of a user stream comes from the bus, in order).

Like jobs, an event belongs to a write: `publish_after_commit` renders it at once and
sends it only once the session's transaction has committed; a rollback drops it. A
failure to publish is logged and never fails the request whose write did commit.
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import RealtimeSettings
from app.core.db import after_commit_batch
from app.core.observability import REDIS_ERRORS

logger = logging.getLogger(__name__)

BUS_KEY = "events:bus"
EVENTS_INFO_KEY = "events"
_PENDING_KEY = "pending_events"

# KEYS: bus, user stream. ARGV: bus size, history size, history ttl (ms), user, type, ts,
# data. Returns the event id.
_PUBLISH = """
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*',
    'user', ARGV[4], 'type', ARGV[5], 'ts', ARGV[6], 'data', ARGV[7])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], id,
    'type', ARGV[5], 'ts', ARGV[6], 'data', ARGV[7])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return id
"""


def user_stream_key(user_id: UUID | str) -> str:
    return f"events:user:{user_id}"


@dataclass(frozen=True, slots=True)
class PendingEvent:
    user_id: UUID
    type: str
    ts: str
    data: str  # JSON text of the REST body


@dataclass(frozen=True, slots=True)
class Envelope:
    """An event as it travels to clients: its id, type and the JSON text of
    `{id, type, ts, data}`, rendered once for every recipient."""

    id: str
    type: str
    text: str

    @classmethod
    def render(cls, event_id: str, fields: dict[str, str]) -> Envelope:
        # `data` is already JSON: splice it in instead of parsing and dumping it again.
        head = json.dumps({"id": event_id, "type": fields["type"], "ts": fields["ts"]})
        return cls(event_id, fields["type"], f'{head[:-1]}, "data": {fields["data"]}}}')


class EventPublisher:
    def __init__(self, redis: Redis, settings: RealtimeSettings) -> None:
        self._redis = redis
        self._script = redis.register_script(_PUBLISH)
        self._settings = settings

    def _args(self, event: PendingEvent) -> list[str | int]:
        settings = self._settings
        return [
            settings.bus_size,
            settings.history_size,
            settings.history_ttl_hours * 3600 * 1000,
            str(event.user_id),
            event.type,
            event.ts,
            event.data,
        ]

    async def publish(self, events: list[PendingEvent]) -> list[str]:
        """Append the events to the bus and their owners' histories; their ids."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for event in events:
                keys = [BUS_KEY, user_stream_key(event.user_id)]
                await self._script(keys=keys, args=self._args(event), client=pipe)
            ids: list[str] = await pipe.execute()
        return ids


def events_info(publisher: EventPublisher) -> dict[str, object]:
    """`session_scope(..., info=events_info(publisher))`: lets the session publish."""
    return {EVENTS_INFO_KEY: publisher}


EventData = BaseModel | dict[str, Any] | str  # a str is JSON text, rendered already


def render(
    user_id: UUID, type_: str, data: EventData, *, ts: datetime | None = None
) -> PendingEvent:
    if isinstance(data, BaseModel):
        body = data.model_dump_json()
    else:
        body = data if isinstance(data, str) else json.dumps(data)
    moment = (ts or datetime.now(UTC)).isoformat(timespec="milliseconds")
    return PendingEvent(user_id=user_id, type=type_, ts=moment, data=body)


def publish_after_commit(session: AsyncSession, user_id: UUID, type_: str, data: EventData) -> None:
    """Publish `type_` with `data` (rendered now) to `user_id` once this session's
    transaction commits."""
    publisher = session.info.get(EVENTS_INFO_KEY)
    if not isinstance(publisher, EventPublisher):
        msg = "this session was not opened with session_scope(..., info=events_info(...))"
        raise TypeError(msg)
    event = render(user_id, type_, data)
    after_commit_batch(session, _PENDING_KEY, event, functools.partial(_send, publisher))


async def _send(publisher: EventPublisher, events: list[PendingEvent]) -> None:
    try:
        await publisher.publish(events)
    except (RedisError, OSError) as exc:
        # The write is committed; live clients miss these events and see the change
        # the next time they read it.
        REDIS_ERRORS.labels("events-publish").inc()
        logger.warning("%d events not published: %s", len(events), exc)
