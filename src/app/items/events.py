"""The realtime events of items, published once the change has committed."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.events import publish_after_commit
from app.items.schemas import ItemRead
from app.models import Item
from app.realtime.schemas import EventType


def announce(session: AsyncSession, item: Item, event: EventType) -> None:
    """Tell the owner's realtime clients, with the item's REST body."""
    publish_after_commit(session, item.owner_id, event, ItemRead.model_validate(item))
