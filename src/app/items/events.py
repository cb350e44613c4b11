"""What every committed change to an item sets off: the realtime event to its owner and
the refreshed cache entry of GET /items/{id}, both from the same rendered body."""

from __future__ import annotations

from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.cache import forget_after_commit, store_after_commit
from app.core.events import publish_after_commit
from app.items.schemas import ItemRead
from app.models import Item
from app.realtime.schemas import EventType


def cache_key(item_id: UUID) -> str:
    return f"cache:item:{item_id}"


def rendered(item: Item) -> str:
    """The item's body, as GET /items/{id} answers it and its cache entry holds it."""
    return ItemRead.model_validate(item).model_dump_json()


def cache_entry(item: Item, body: str) -> tuple[str, int, str]:
    """The item's cache entry: key, version, and value (`<owner id>|<body>`)."""
    return cache_key(item.id), item.version, f"{item.owner_id}|{body}"


def owner_and_body(value: str) -> tuple[str, str]:
    """What `cache_entry` put in a value."""
    owner_id, _, body = value.partition("|")
    return owner_id, body


def announce(session: AsyncSession, item: Item, event: EventType) -> None:
    """Tell the owner's realtime clients and refresh the cache, once committed."""
    body = rendered(item)
    publish_after_commit(session, item.owner_id, event, body)
    if event is EventType.item_deleted:
        forget_after_commit(session, cache_key(item.id))
    else:
        store_after_commit(session, *cache_entry(item, body))


def forget(session: AsyncSession, item_ids: list[UUID]) -> None:
    """Items that go without an event of their own (their owner was deleted)."""
    for item_id in item_ids:
        forget_after_commit(session, cache_key(item_id))
