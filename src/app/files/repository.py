"""Every query on files and attachments."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from app.core.pagination import Paged, PageParams, paginate
from app.models import Item, StoredFile, item_attachments


async def get(
    session: AsyncSession, file_id: UUID, *, for_update: bool = False
) -> StoredFile | None:
    """`for_update` waits for any transaction still linking the file to an item (its
    foreign-key check holds a share lock on the row), so the caller sees every link."""
    return await session.get(StoredFile, file_id, with_for_update=for_update)


async def add_all(session: AsyncSession, files: Sequence[StoredFile]) -> None:
    session.add_all(files)
    await session.flush()


async def page(session: AsyncSession, *, owner_id: UUID, page: PageParams) -> Paged[StoredFile]:
    statement = select(StoredFile).where(StoredFile.owner_id == owner_id)
    return await paginate(session, statement, key=StoredFile.id, page=page)


async def items_showing(session: AsyncSession, file_id: UUID) -> Sequence[Item]:
    """The items this file is attached to, with what their bodies show."""
    statement = (
        select(Item)
        .join(item_attachments, item_attachments.c.item_id == Item.id)
        .where(item_attachments.c.file_id == file_id)
        .options(selectinload(Item.tags), selectinload(Item.attachments))
        .with_for_update(of=Item)
    )
    return (await session.scalars(statement)).all()


async def storage_keys_of(session: AsyncSession, owner_id: UUID) -> list[str]:
    statement = select(StoredFile.storage_key).where(StoredFile.owner_id == owner_id)
    return list(await session.scalars(statement))


async def delete(session: AsyncSession, file: StoredFile) -> None:
    await session.delete(file)
    await session.flush()
