"""Rules for files: uploads, who sees them, deletion."""

from __future__ import annotations

from collections.abc import AsyncIterator
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.actor import Actor
from app.core.config import FilesSettings
from app.core.db import after_commit, on_rollback, utcnow
from app.core.errors import NotFound
from app.core.events import publish_after_commit
from app.core.pagination import Paged, PageParams
from app.core.storage import Storage
from app.files import repository, upload
from app.files.schemas import FileRead
from app.items.events import announce
from app.models import StoredFile
from app.realtime.schemas import EventType


async def upload_files(
    session: AsyncSession,
    owner: Actor,
    *,
    content_type: str | None,
    body: AsyncIterator[bytes],
    storage: Storage,
    limits: FilesSettings,
) -> list[StoredFile]:
    """Stream the request's files into storage, then record them. The session is first
    used after the upload, so a slow upload holds no database connection."""
    received = await upload.receive(content_type, body, storage=storage, limits=limits)
    keys = [file.storage_key for file in received.files]

    async def forget_bytes() -> None:  # the rows never committed
        for key in keys:
            await storage.delete(key)

    on_rollback(session, forget_bytes)
    files = [
        StoredFile(
            owner_id=owner.id,
            storage_key=file.storage_key,
            filename=file.filename,
            content_type=file.content_type,
            size=file.size,
            sha256=file.sha256,
            description=received.description,
        )
        for file in received.files
    ]
    await repository.add_all(session, files)
    for file in files:
        publish_after_commit(
            session, owner.id, EventType.file_uploaded, FileRead.model_validate(file)
        )
    return files


async def get(
    session: AsyncSession, actor: Actor, file_id: UUID, *, for_update: bool = False
) -> StoredFile:
    file = await repository.get(session, file_id, for_update=for_update)
    # Another user's file answers exactly like a missing one.
    if file is None or (file.owner_id != actor.id and not actor.sees_everything):
        raise NotFound("File not found")
    return file


async def list_page(session: AsyncSession, actor: Actor, *, page: PageParams) -> Paged[StoredFile]:
    return await repository.page(session, owner_id=actor.id, page=page)


async def delete(session: AsyncSession, actor: Actor, file_id: UUID, *, storage: Storage) -> None:
    """Delete the file and detach it from its items (whose version moves on); the bytes
    go only once the deletion has committed."""
    file = await get(session, actor, file_id, for_update=True)
    for item in await repository.items_showing(session, file.id):
        item.attachments.remove(file)
        item.updated_at = utcnow()
        await session.flush()
        announce(session, item, EventType.item_updated)
    await repository.delete(session, file)
    key = file.storage_key

    async def delete_bytes() -> None:
        await storage.delete(key)

    after_commit(session, delete_bytes)
