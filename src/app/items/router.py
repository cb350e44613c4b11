from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Form, Header, Query, Request, Response, status
from starlette.requests import HTTPConnection

from app.auth.dependencies import IdempotencyDep, ItemsReader, ItemsWriter, stream_scoped
from app.auth.scopes import Scope
from app.auth.service import Principal
from app.core.context import fetched_from_redis, want_from_redis
from app.core.dependencies import ResourcesDep, SessionDep, SessionmakerDep
from app.core.errors import problem_responses
from app.core.http import (
    REVALIDATE,
    REVALIDATE_WITH_ETAG,
    IfMatch,
    etag_of,
    not_modified_unless_changed,
    set_validators,
)
from app.core.idempotency import IdempotentRoute
from app.core.pagination import Page, PageParams
from app.files.schemas import AttachmentCreate
from app.items import service as item_service
from app.items.events import cache_key
from app.items.imports import (
    IMPORT_DESCRIPTION,
    IMPORT_OPENAPI,
    IMPORT_RESPONSES,
    ImportForm,
    ImportResult,
)
from app.items.schemas import ItemCreate, ItemFilters, ItemRead, ItemReplace, ItemUpdate
from app.jobs.schemas import JobAccepted
from app.models import Item

router = APIRouter(
    prefix="/items",
    tags=["items"],
    route_class=IdempotentRoute,
    dependencies=[REVALIDATE_WITH_ETAG],
    responses=problem_responses(401),
)


def _versioned(response: Response, item: Item) -> None:
    set_validators(response, etag_of(item.version), cache_control=REVALIDATE)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ItemRead,
    responses=problem_responses(409),
)
async def create_item(
    body: ItemCreate,
    user: ItemsWriter,
    session: SessionDep,
    request: Request,
    response: Response,
    _idempotency: IdempotencyDep,
) -> Item:
    """Create an item owned by the caller. Send `Idempotency-Key` to make retries safe."""
    item = await item_service.create(session, user, data=body)
    response.headers["Location"] = str(request.url_for("read_item", item_id=item.id))
    _versioned(response, item)
    return item


@router.post(
    "/exports",
    status_code=status.HTTP_202_ACCEPTED,
    responses=problem_responses(409),
)
async def export_items(
    user: ItemsReader,
    session: SessionDep,
    request: Request,
    response: Response,
    _idempotency: IdempotencyDep,
) -> JobAccepted:
    """Export your items as CSV in the background. Follow `status_url` until the job is
    `complete`, then fetch its `download_url`."""
    job = await item_service.request_export(session, user)
    status_url = str(request.url_for("read_job", job_id=job.id))
    response.headers["Location"] = status_url
    return JobAccepted(job_id=job.id, status_url=status_url)


async def import_slot() -> AsyncIterator[None]:
    """Held while an import runs (its writes are heavy): see ImportSlot."""
    yield


# At most two imports per process at once; more wait their turn without a thread.
ImportSlot = Depends(import_slot, scope="function", max_concurrency=2)


@router.post(
    "/imports",
    status_code=status.HTTP_201_CREATED,
    dependencies=[ImportSlot],
    description=IMPORT_DESCRIPTION,
    openapi_extra=IMPORT_OPENAPI,
    responses=IMPORT_RESPONSES,
)
async def import_items(
    form: Annotated[ImportForm, Form(media_type="multipart/form-data")],
    user: ItemsWriter,
    session: SessionDep,
    _idempotency: IdempotencyDep,
) -> ImportResult:
    """Documented from app.items.imports (`IMPORT_DESCRIPTION`), next to the parser's
    constants, so what the document says a file must be is what `read_rows` checks."""
    return await item_service.import_csv(
        session, user, upload=form.file, skip_invalid=form.on_invalid == "skip"
    )


@router.get(
    "/stream",
    responses={
        200: {
            "description": "One item (`ItemRead`) per line, newest first",
            "content": {
                "application/jsonl": {"itemSchema": {"$ref": "#/components/schemas/ItemRead"}}
            },
        }
    },
)
async def stream_items(
    principal: Annotated[Principal, stream_scoped(Scope.items_read)],
    maker: SessionmakerDep,
    filters: Annotated[ItemFilters, Query()],
) -> AsyncIterable[ItemRead]:
    """Every item `GET /items` would page through (same filters), as JSON Lines in one
    response: for clients that sync everything. Read 100 at a time, each batch in a
    short database session, so a slow reader holds no connection."""
    async for item in item_service.stream(maker, principal.actor, filters=filters):
        yield ItemRead.model_validate(item)


@router.get("", response_model=Page[ItemRead])
async def list_items(
    user: ItemsReader,
    maker: SessionmakerDep,
    resources: ResourcesDep,
    page: Annotated[PageParams, Query()],
    filters: Annotated[ItemFilters, Query()],
) -> Response:
    """The caller's items (every item for admins), newest first, filtered."""
    # Page[ItemRead]'s JSON already, assembled from the items' cached bodies.
    body = await item_service.list_page_json(
        maker, user, filters=filters, page=page, cache=resources.cache
    )
    return Response(body, media_type="application/json")


async def prefetch_cached_item(item_id: UUID, connection: HTTPConnection) -> None:
    """Runs before authentication (declared first): the cached body comes back in
    authentication's round trip to Redis, not in one of its own."""
    want_from_redis(connection.scope, cache_key(item_id))


@router.get(
    "/{item_id:uuid}",
    response_model=ItemRead,
    responses={304: {"description": "Not Modified"}, **problem_responses(404)},
)
async def read_item(
    item_id: UUID,
    _prefetch: Annotated[None, Depends(prefetch_cached_item)],
    user: ItemsReader,
    maker: SessionmakerDep,
    resources: ResourcesDep,
    request: Request,
    if_none_match: Annotated[str | None, Header(max_length=1024)] = None,
) -> Response:
    """One item, with its `ETag`; 304 when `If-None-Match` still matches."""
    prefetched = fetched_from_redis(request.scope, cache_key(item_id))
    item = await item_service.read_body(
        maker, user, item_id, cache=resources.cache, prefetched=prefetched
    )
    etag = etag_of(item.version)
    not_modified_unless_changed(if_none_match, etag, cache_control=REVALIDATE)
    # The body is ItemRead's JSON already (rendered when it was read or written).
    response = Response(item.json, media_type="application/json")
    set_validators(response, etag, cache_control=REVALIDATE)
    return response


@router.put("/{item_id:uuid}", response_model=ItemRead, responses=problem_responses(404, 412))
async def replace_item(
    item_id: UUID,
    body: ItemReplace,
    user: ItemsWriter,
    session: SessionDep,
    response: Response,
    precondition: IfMatch,
) -> Item:
    """Replace an item. Send `If-Match` with its `ETag` to refuse a lost update (412)."""
    item = await item_service.replace(session, user, item_id, data=body, precondition=precondition)
    _versioned(response, item)
    return item


@router.patch("/{item_id:uuid}", response_model=ItemRead, responses=problem_responses(404, 412))
async def update_item(
    item_id: UUID,
    body: ItemUpdate,
    user: ItemsWriter,
    session: SessionDep,
    response: Response,
    precondition: IfMatch,
) -> Item:
    """Change some fields of an item. Send `If-Match` with its `ETag` to refuse a lost
    update (412)."""
    item = await item_service.update(session, user, item_id, data=body, precondition=precondition)
    _versioned(response, item)
    return item


@router.post(
    "/{item_id:uuid}/attachments",
    status_code=status.HTTP_201_CREATED,
    response_model=ItemRead,
    responses={
        200: {"description": "The file was attached already", "model": ItemRead},
        **problem_responses(404, 409, 412),
    },
)
async def attach_file(
    item_id: UUID,
    body: AttachmentCreate,
    user: ItemsWriter,
    session: SessionDep,
    response: Response,
    precondition: IfMatch,
    resources: ResourcesDep,
) -> Item:
    """Attach one of your files to the item (honours `If-Match`). 201 when attached now,
    200 when it was already; the answer is the item, whose `attachments` list it."""
    item, attached = await item_service.attach(
        session,
        user,
        item_id,
        file_id=body.file_id,
        precondition=precondition,
        limit=resources.settings.files.max_attachments_per_item,
    )
    if not attached:
        response.status_code = status.HTTP_200_OK
    _versioned(response, item)
    return item


@router.delete(
    "/{item_id:uuid}/attachments/{file_id:uuid}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_responses(404, 412),
)
async def detach_file(
    item_id: UUID, file_id: UUID, user: ItemsWriter, session: SessionDep, precondition: IfMatch
) -> None:
    """Detach a file from the item (the file itself stays; honours `If-Match`)."""
    await item_service.detach(session, user, item_id, file_id=file_id, precondition=precondition)


@router.delete(
    "/{item_id:uuid}", status_code=status.HTTP_204_NO_CONTENT, responses=problem_responses(404, 412)
)
async def delete_item(
    item_id: UUID, user: ItemsWriter, session: SessionDep, precondition: IfMatch
) -> None:
    """Delete an item (honours `If-Match`)."""
    await item_service.delete(session, user, item_id, precondition=precondition)
