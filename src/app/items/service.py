"""Rules for items: ownership, optimistic concurrency, tags."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from fastapi import UploadFile
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth.actor import Actor
from app.core.cache import VersionedCache, parse_entry
from app.core.db import session_scope, utcnow
from app.core.errors import Conflict, NotFound
from app.core.http import Precondition, etag_of
from app.core.pagination import Paged, PageParams
from app.files import service as file_service
from app.items import imports, repository
from app.items.events import announce, cache_entry, cache_key, owner_and_body, rendered
from app.items.schemas import ItemCreate, ItemFilters, ItemReplace, ItemUpdate
from app.jobs import service as job_service
from app.models import Item, Job
from app.realtime.schemas import EventType

EXPORT_JOB = "items.export"
STREAM_BATCH = 100
CREATED, UPDATED, DELETED = EventType.item_created, EventType.item_updated, EventType.item_deleted


async def get(session: AsyncSession, actor: Actor, item_id: UUID) -> Item:
    item = await repository.get(session, item_id)
    # Another user's item answers exactly like a missing one: no existence oracle.
    if item is None or (item.owner_id != actor.id and not actor.sees_everything):
        raise NotFound("Item not found")
    return item


@dataclass(frozen=True, slots=True)
class ItemBody:
    """An item as GET /items/{id} answers it: its version (the ETag) and JSON body."""

    version: int
    json: str


async def read_body(
    maker: async_sessionmaker[AsyncSession],
    actor: Actor,
    item_id: UUID,
    *,
    cache: VersionedCache,
    prefetched: tuple[bool, str | None] = (False, None),
) -> ItemBody:
    """The item's body, from the cache when it holds it (cache-aside; writes keep it
    right, see app.core.cache), else from the database, filling the cache. Only a miss
    opens a (short) session. `prefetched`: the cache entry, when authentication read
    it already (app.core.context.fetched_from_redis)."""
    was_read, raw = prefetched
    if was_read and cache.enabled:
        entry = parse_entry(raw)
    else:
        entry = await cache.get(cache_key(item_id))
    if entry is not None:
        owner_id, body = owner_and_body(entry.value)
        if owner_id != str(actor.id) and not actor.sees_everything:
            raise NotFound("Item not found")
        return ItemBody(entry.version, body)
    async with session_scope(maker) as session:
        item = await get(session, actor, item_id)
        body = rendered(item)
    await cache.store(*cache_entry(item, body))
    return ItemBody(item.version, body)


async def stream(
    maker: async_sessionmaker[AsyncSession], actor: Actor, *, filters: ItemFilters
) -> AsyncIterator[Item]:
    """Every item `list_page` would page through, one page at a time, each read in a
    short session of its own: a slow reader never holds a database connection."""
    page = PageParams(limit=STREAM_BATCH)
    while True:
        async with session_scope(maker) as session:
            paged = await list_page(session, actor, filters=filters, page=page)
        for item in paged.items:
            yield item
        if paged.next_cursor is None:
            return
        page = PageParams(limit=STREAM_BATCH, cursor=paged.next_cursor)


async def list_page(
    session: AsyncSession, actor: Actor, *, filters: ItemFilters, page: PageParams
) -> Paged[Item]:
    owner_id = None if actor.sees_everything else actor.id
    return await repository.page(session, owner_id=owner_id, filters=filters, page=page)


async def list_page_json(
    maker: async_sessionmaker[AsyncSession],
    actor: Actor,
    *,
    filters: ItemFilters,
    page: PageParams,
    cache: VersionedCache,
) -> str:
    """`list_page` as `Page[ItemRead]` JSON, built from the bodies GET /items/{id}
    caches: one query for the page's ids and versions, one MGET, and the items the cache
    does not hold at that version loaded (and cached) in one more query. Each query has
    a short session of its own: no connection is held while Redis answers."""
    if not cache.enabled:  # nothing to take from Redis: one query, bodies and all
        async with session_scope(maker) as session:
            paged = await list_page(session, actor, filters=filters, page=page)
            return _page_json([rendered(item) for item in paged.items], paged.next_cursor)
    owner_id = None if actor.sees_everything else actor.id
    async with session_scope(maker) as session:
        keys = await repository.page_versions(
            session, owner_id=owner_id, filters=filters, page=page
        )
    ids = [item_id for item_id, _ in keys.items]
    entries = await cache.get_many([cache_key(item_id) for item_id in ids])
    bodies: dict[UUID, str] = {}
    for (item_id, version), entry in zip(keys.items, entries, strict=True):
        if entry is not None and entry.version == version:
            bodies[item_id] = owner_and_body(entry.value)[1]
    missing = [item_id for item_id in ids if item_id not in bodies]
    if missing:
        fills = []
        async with session_scope(maker) as session:
            for item in await repository.with_bodies(session, missing):
                bodies[item.id] = rendered(item)
                fills.append(cache_entry(item, bodies[item.id]))
        await cache.store_many(fills)
    # An item deleted between the two queries is left out; the cursor still holds.
    return _page_json([bodies[item_id] for item_id in ids if item_id in bodies], keys.next_cursor)


def _page_json(bodies: list[str], next_cursor: str | None) -> str:
    return f'{{"items":[{",".join(bodies)}],"next_cursor":{json.dumps(next_cursor)}}}'


async def request_export(session: AsyncSession, owner: Actor) -> Job:
    """Queue a CSV export of the owner's items; follow it at /jobs/{id}."""
    return await job_service.submit(session, owner, kind=EXPORT_JOB, function=EXPORT_JOB)


async def create(session: AsyncSession, owner: Actor, *, data: ItemCreate) -> Item:
    return (await create_many(session, owner, [data]))[0]


async def create_many(
    session: AsyncSession, owner: Actor, rows: Sequence[ItemCreate]
) -> list[Item]:
    """Create the items in one flush, their tags looked up (or made) once for all."""
    by_name = {
        tag.name: tag
        for tag in await repository.tags_named(session, sorted({n for r in rows for n in r.tags}))
    }
    items = [
        Item(
            owner_id=owner.id,
            **data.model_dump(exclude={"tags"}),
            tags=[by_name[name] for name in sorted(set(data.tags))],
            attachments=[],
        )
        for data in rows
    ]
    await repository.add_all(session, items)
    for item in items:
        announce(session, item, CREATED)
    return items


async def import_csv(
    session: AsyncSession, owner: Actor, *, upload: UploadFile, skip_invalid: bool
) -> imports.ImportResult:
    """Create the owner's items from a CSV file (all of them, or, `skip_invalid`, the
    valid ones), in this one transaction."""
    rows = await imports.read_rows(upload)
    if rows.invalid and not skip_invalid:
        raise imports.InvalidRows(rows.invalid)
    await create_many(session, owner, rows.valid)
    return imports.ImportResult(created=len(rows.valid), skipped=rows.invalid)


async def replace(
    session: AsyncSession,
    actor: Actor,
    item_id: UUID,
    *,
    data: ItemReplace,
    precondition: Precondition,
) -> Item:
    item = await get(session, actor, item_id)
    precondition.check(etag_of(item.version))
    await _apply(session, item, data.model_dump(), precondition=precondition)
    return item


async def update(
    session: AsyncSession,
    actor: Actor,
    item_id: UUID,
    *,
    data: ItemUpdate,
    precondition: Precondition,
) -> Item:
    item = await get(session, actor, item_id)
    precondition.check(etag_of(item.version))
    await _apply(session, item, data.model_dump(exclude_unset=True), precondition=precondition)
    return item


async def delete(
    session: AsyncSession, actor: Actor, item_id: UUID, *, precondition: Precondition
) -> None:
    item = await get(session, actor, item_id)
    precondition.check(etag_of(item.version))
    if await repository.delete(session, item):
        announce(session, item, DELETED)
        return
    if await repository.exists(session, item_id):
        raise repository.changed_concurrently(precondition_sent=precondition.sent)
    raise NotFound("Item not found")


async def attach(
    session: AsyncSession,
    actor: Actor,
    item_id: UUID,
    *,
    file_id: UUID,
    precondition: Precondition,
    limit: int,
) -> tuple[Item, bool]:
    """Attach one of the owner's files; whether it was newly attached."""
    item = await get(session, actor, item_id)
    precondition.check(etag_of(item.version))
    file = await file_service.get(session, actor, file_id)
    if file.owner_id != item.owner_id:
        raise Conflict("The file and the item belong to different accounts")
    if file in item.attachments:
        return item, False
    if len(item.attachments) >= limit:
        raise Conflict(f"An item holds at most {limit} attachments; detach one first")
    item.attachments.append(file)
    await _touch(session, item, precondition=precondition)
    return item, True


async def detach(
    session: AsyncSession, actor: Actor, item_id: UUID, *, file_id: UUID, precondition: Precondition
) -> None:
    item = await get(session, actor, item_id)
    precondition.check(etag_of(item.version))
    attached = next((file for file in item.attachments if file.id == file_id), None)
    if attached is None:
        raise NotFound("This file is not attached to the item")
    item.attachments.remove(attached)
    await _touch(session, item, precondition=precondition)


async def _touch(session: AsyncSession, item: Item, *, precondition: Precondition) -> None:
    """Save a change to the item's body: `version` (its ETag) moves on, clients hear."""
    item.updated_at = utcnow()
    await repository.save(session, precondition_sent=precondition.sent)
    announce(session, item, UPDATED)


async def _apply(
    session: AsyncSession, item: Item, changes: dict[str, Any], *, precondition: Precondition
) -> None:
    tag_names: list[str] | None = changes.pop("tags", None)
    changed = False
    # Tags first: their queries autoflush, and the item must not be dirty by then.
    if tag_names is not None and tag_names != [tag.name for tag in item.tags]:
        item.tags = await repository.tags_named(session, tag_names)
        changed = True
    for field, value in changes.items():
        if getattr(item, field) != value:
            setattr(item, field, value)
            changed = True
    if changed:
        # Also when only the tags changed: the row UPDATE is what bumps `version`.
        await _touch(session, item, precondition=precondition)
