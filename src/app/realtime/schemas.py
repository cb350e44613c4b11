from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, Field

# A Redis stream id, as events carry it: `<milliseconds>-<sequence>`.
EVENT_ID_PATTERN = r"^[0-9]{1,20}-[0-9]{1,20}$"
EventId = Annotated[str, Field(pattern=EVENT_ID_PATTERN, max_length=41)]


class EventType(StrEnum):
    item_created = "item.created"
    item_updated = "item.updated"
    item_deleted = "item.deleted"
    job_completed = "job.completed"
    job_failed = "job.failed"
    file_uploaded = "file.uploaded"


class EventScope(StrEnum):
    own = "own"
    all = "all"


class Event(BaseModel):
    """One event, as the SSE `data:` field and as a WebSocket text frame."""

    id: str = Field(
        description="The event's position: pass it back (`Last-Event-ID`, `last_event_id`) "
        "to resume after it.",
        examples=["1732451234567-0"],
    )
    type: EventType
    ts: datetime = Field(description="When the change was committed (UTC).")
    data: dict[str, Any] = Field(
        description="The object as the REST API returns it: an item (`item.*`, the last "
        "state for `item.deleted`), a job (`job.*`) or a file (`file.uploaded`)."
    )


class Pong(BaseModel):
    """The answer to a client's `{"type": "ping"}`."""

    type: str = "pong"
