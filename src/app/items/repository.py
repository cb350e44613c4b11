"""Every query on items and tags."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import TypeVarTuple
from uuid import UUID

from sqlalchemy import Row, Select, func, literal, select
from sqlalchemy import delete as delete_statement
from sqlalchemy.dialects.postgresql import aggregate_order_by, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload
from sqlalchemy.orm.exc import StaleDataError

from app.core.errors import AppError, Conflict, PreconditionFailed
from app.core.pagination import Paged, PageParams, paginate, paginate_rows
from app.items.schemas import ItemFilters
from app.models import Item, Tag, item_tags
from app.models.item import SEARCH_CONFIG

Ts = TypeVarTuple("Ts")

# What an item's body shows besides its own columns.
_BODY = (selectinload(Item.tags), selectinload(Item.attachments))


async def get(session: AsyncSession, item_id: UUID) -> Item | None:
    return await session.scalar(select(Item).where(Item.id == item_id).options(*_BODY))


async def add_all(session: AsyncSession, items: Sequence[Item]) -> None:
    session.add_all(items)
    await session.flush()


async def delete(session: AsyncSession, item: Item) -> bool:
    """Delete the item at the version it was read; False when a concurrent request
    changed or deleted it first."""
    statement = (
        delete_statement(Item)
        .where(Item.id == item.id, Item.version == item.version)
        .returning(Item.id)
    )
    return (await session.execute(statement)).first() is not None


async def ids_of(session: AsyncSession, owner_id: UUID) -> list[UUID]:
    return list(await session.scalars(select(Item.id).where(Item.owner_id == owner_id)))


async def exists(session: AsyncSession, item_id: UUID) -> bool:
    return await session.scalar(select(Item.id).where(Item.id == item_id)) is not None


async def save(session: AsyncSession, *, precondition_sent: bool) -> None:
    """Flush; when the row's version moved under us (a concurrent writer), answer 412 if
    the client sent If-Match, else 409."""
    try:
        await session.flush()
    except StaleDataError as exc:
        raise changed_concurrently(precondition_sent=precondition_sent) from exc


def changed_concurrently(*, precondition_sent: bool) -> AppError:
    msg = "The item was changed by another request; fetch it and retry"
    return PreconditionFailed(msg) if precondition_sent else Conflict(msg)


async def tags_named(session: AsyncSession, names: Sequence[str]) -> list[Tag]:
    """The tags with these names, creating the missing ones (safe under concurrency)."""
    if not names:
        return []
    await session.execute(
        insert(Tag).values([{"name": name} for name in names]).on_conflict_do_nothing()
    )
    return list(await session.scalars(select(Tag).where(Tag.name.in_(names)).order_by(Tag.name)))


def _filtered(statement: Select[*Ts], filters: ItemFilters) -> Select[*Ts]:
    if filters.q is not None:
        query = func.websearch_to_tsquery(SEARCH_CONFIG, filters.q)
        statement = statement.where(Item.search.bool_op("@@")(query))
    if filters.status is not None:
        statement = statement.where(Item.status == filters.status)
    if filters.min_price is not None:
        statement = statement.where(Item.price >= filters.min_price)
    if filters.max_price is not None:
        statement = statement.where(Item.price <= filters.max_price)
    if filters.tag:
        tagged_with_all = (
            select(item_tags.c.item_id)
            .join(Tag, Tag.id == item_tags.c.tag_id)
            .where(Tag.name.in_(filters.tag))
            .group_by(item_tags.c.item_id)
            .having(func.count() == len(set(filters.tag)))
        )
        statement = statement.where(Item.id.in_(tagged_with_all))
    return statement


async def page(
    session: AsyncSession, *, owner_id: UUID | None, filters: ItemFilters, page: PageParams
) -> Paged[Item]:
    statement = select(Item).options(*_BODY)
    if owner_id is not None:
        statement = statement.where(Item.owner_id == owner_id)
    return await paginate(session, _filtered(statement, filters), key=Item.id, page=page)


async def page_versions(
    session: AsyncSession, *, owner_id: UUID | None, filters: ItemFilters, page: PageParams
) -> Paged[Row[UUID, int]]:
    """`page`'s items as (id, version) only: what a reader needs to take their bodies
    from the cache."""
    statement = select(Item.id, Item.version)
    if owner_id is not None:
        statement = statement.where(Item.owner_id == owner_id)
    return await paginate_rows(session, _filtered(statement, filters), key=Item.id, page=page)


async def with_bodies(session: AsyncSession, item_ids: Sequence[UUID]) -> Sequence[Item]:
    """These items, with what their bodies show (tags, attachments)."""
    return (await session.scalars(select(Item).where(Item.id.in_(item_ids)).options(*_BODY))).all()


EXPORT_COLUMNS = (
    "id", "title", "description", "price", "status", "tags", "created_at", "updated_at", "version",
)  # fmt: skip
EXPORT_BATCH = 1000


async def export_rows(
    session: AsyncSession, *, owner_id: UUID
) -> AsyncIterator[Sequence[Row[tuple[object, ...]]]]:
    """The owner's items in id order, `EXPORT_BATCH` rows at a time, from a server-side
    cursor: memory stays flat however many items there are."""
    tags = func.coalesce(func.string_agg(Tag.name, aggregate_order_by(literal(";"), Tag.name)), "")
    statement = (
        select(
            Item.id,
            Item.title,
            Item.description,
            Item.price,
            Item.status,
            tags,
            Item.created_at,
            Item.updated_at,
            Item.version,
        )
        .outerjoin(item_tags, item_tags.c.item_id == Item.id)
        .outerjoin(Tag, Tag.id == item_tags.c.tag_id)
        .where(Item.owner_id == owner_id)
        .group_by(Item.id)
        .order_by(Item.id)
        .execution_options(yield_per=EXPORT_BATCH)
    )
    result = await session.stream(statement)
    async for partition in result.partitions():
        yield partition
