from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

import anyio
from fastapi import APIRouter, Header, Query, Request, Response, status
from fastapi.responses import FileResponse

from app.auth.actor import Actor
from app.auth.dependencies import FilesReader, FilesWriter, acting
from app.auth.scopes import Scope
from app.core.config import FilesSettings
from app.core.dependencies import ResourcesDep, SessionDep
from app.core.errors import NotFound, problem_responses
from app.core.http import REVALIDATE, REVALIDATE_WITH_ETAG, ConditionalGet, http_date
from app.core.idempotency import IdempotentRoute
from app.core.pagination import Page, Paged, PageParams
from app.files import service as file_service
from app.files.dependencies import UploadIdempotency
from app.files.responses import StoredFileResponse
from app.files.schemas import MAX_DESCRIPTION_CHARS, FileRead
from app.models import StoredFile

UPLOAD_LIMIT_HEADERS = (
    "Upload-Max-File-Bytes",
    "Upload-Max-Request-Bytes",
    "Upload-Max-Files",
    "Upload-Content-Types",
)

# Every route spends the caller's budget (429) and needs Redis and PostgreSQL (503);
# every route but OPTIONS needs a caller (401) whose API key holds the scope (403).
router = APIRouter(
    prefix="/files",
    tags=["files"],
    route_class=IdempotentRoute,
    dependencies=[REVALIDATE_WITH_ETAG],
    responses=problem_responses(429, 503),
)
_CALLER = problem_responses(401, 403)


def accepted_types(limits: FilesSettings) -> str:
    """The content types a file part may declare, comma-separated: the list the upload
    checks (`_accepted_type` in app.files.upload), as `OPTIONS` and OpenAPI state it."""
    return ", ".join(limits.allowed_types)


def document_upload_limits(operation: dict[str, Any], limits: FilesSettings) -> None:
    """State in the upload operation the types this app accepts (`encoding`) and how
    many files one upload may hold. They are settings (FILES_ALLOWED_TYPES,
    FILES_MAX_FILES_PER_REQUEST), known once the app is built, not when this module is
    imported: app.main calls this when it generates the document."""
    form = operation["requestBody"]["content"]["multipart/form-data"]
    form["encoding"] = {"files": {"contentType": accepted_types(limits)}}
    form["schema"]["properties"]["files"]["maxItems"] = limits.max_files_per_request


# The body is parsed by the endpoint as it streams (see app.files.upload), so FastAPI is
# told its shape instead of parsing it: the documented way to take over body parsing.
_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["files"],
                    "additionalProperties": False,
                    "properties": {
                        "files": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "minItems": 1,
                            "description": "One or more files (repeat the field).",
                        },
                        "description": {
                            "type": "string",
                            "maxLength": MAX_DESCRIPTION_CHARS,
                            "description": "Kept with every file of this upload.",
                        },
                    },
                },
                "examples": {
                    "two files": {
                        "summary": "A photo and a note, described together",
                        "value": {
                            "files": ["photo.png", "notes.txt"],
                            "description": "From the site visit",
                        },
                    }
                },
            }
        },
    }
}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=list[FileRead],
    openapi_extra=_UPLOAD_BODY,
    responses=problem_responses(
        401,
        403,
        described={
            400: "Not a `multipart/form-data` body with a boundary, a malformed one, or a part "
            "without a `Content-Disposition` name",
            413: "A file is larger than `FILES_MAX_FILE_BYTES`, or the request than "
            "`FILES_MAX_REQUEST_BYTES` (`OPTIONS` tells both)",
            415: "A file part declares no content type or one the `encoding` does not list, "
            "or its first bytes do not match the type it declares",
            422: "No file in `files`, a part that is neither `files` (with a filename) nor "
            "`description`, more files than `FILES_MAX_FILES_PER_REQUEST`, a description "
            "that is too long or not UTF-8, or a body that ends in the middle of a part",
        },
    ),
)
async def upload_files(
    request: Request,
    principal: FilesWriter,
    session: SessionDep,
    resources: ResourcesDep,
    _idempotency: UploadIdempotency,
) -> list[StoredFile]:
    """Upload files (`multipart/form-data`: `files`, repeatable, and an optional
    `description`). Each file is streamed to storage while it arrives: a file above
    `FILES_MAX_FILE_BYTES` is refused (413) as soon as it passes the limit, a type outside
    `FILES_ALLOWED_TYPES` or whose first bytes do not match it is refused (415), and a
    refused upload leaves nothing behind. Send `Idempotency-Key` to make retries safe."""
    return await file_service.upload_files(
        session,
        principal.actor,
        content_type=request.headers.get("content-type"),
        body=request.stream(),
        storage=resources.storage,
        limits=resources.settings.files,
    )


@router.options(
    "",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={
        204: {
            "description": "What an upload may be",
            "headers": {
                name: {"schema": {"type": "string"}}
                for name in ("Allow", "Accept-Post", *UPLOAD_LIMIT_HEADERS)
            },
        }
    },
)
async def upload_options(resources: ResourcesDep, response: Response) -> None:
    """What an upload may be, for clients to check before they send a big file: the
    methods, the media type (`Accept-Post`), the limits and the accepted content types."""
    limits = resources.settings.files
    response.headers.update(
        {
            "Allow": "GET, POST, OPTIONS",
            "Accept-Post": "multipart/form-data",
            "Upload-Max-File-Bytes": str(limits.max_file_bytes),
            "Upload-Max-Request-Bytes": str(limits.max_request_bytes),
            "Upload-Max-Files": str(limits.max_files_per_request),
            "Upload-Content-Types": accepted_types(limits),
        }
    )


@router.get("", response_model=Page[FileRead], responses=_CALLER)
async def list_files(
    user: FilesReader, session: SessionDep, page: Annotated[PageParams, Query()]
) -> Paged[StoredFile]:
    """Your files, newest first."""
    return await file_service.list_page(session, user, page=page)


@router.get(
    "/{file_id:uuid}", response_model=FileRead, responses={**_CALLER, **problem_responses(404)}
)
async def read_file(file_id: UUID, user: FilesReader, session: SessionDep) -> StoredFile:
    """A file's metadata. Another user's file answers 404."""
    return await file_service.get(session, user, file_id)


_CONTENT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/octet-stream": {}}, "description": "The bytes"},
    206: {"description": "The requested range (`Range: bytes=...`)"},
    304: {"description": "Not Modified: `If-None-Match` still matches"},
    **_CALLER,
    **problem_responses(404, 416),
}


@router.get(
    "/{file_id:uuid}/content", response_class=StoredFileResponse, responses=_CONTENT_RESPONSES
)
@router.head(
    "/{file_id:uuid}/content",
    response_class=StoredFileResponse,
    responses=_CONTENT_RESPONSES,
    operation_id="files-file_content_head",
    summary="The headers of the file's content (size, type, ETag) without the bytes",
)
async def download_file(
    file_id: UUID,
    user: FilesReader,
    session: SessionDep,
    resources: ResourcesDep,
    conditions: Annotated[ConditionalGet, Header()],
) -> FileResponse:
    """The bytes, as an attachment with the uploaded name, `ETag` (the SHA-256),
    `Last-Modified` and byte ranges (`Range`, `If-Range`: 206, 416; a `Range` that
    cannot be parsed, or of more than 8 ranges, is ignored: 200); 304 for a current copy
    (`If-None-Match`, or `If-Modified-Since`)."""
    file = await file_service.get(session, user, file_id)
    etag = f'"{file.sha256}"'
    conditions.check(etag, file.created_at, cache_control=REVALIDATE)
    path = resources.storage.local_path(file.storage_key)
    try:
        stat = await anyio.Path(path).stat()
    except FileNotFoundError as exc:
        raise NotFound("This file's content is no longer available") from exc
    return StoredFileResponse(
        path,
        stat_result=stat,
        media_type=file.content_type,
        filename=file.filename,
        # User-supplied bytes: a browser must not guess another type for them.
        headers={
            "ETag": etag,
            "Last-Modified": http_date(file.created_at),  # files never change
            "Cache-Control": REVALIDATE,
            "X-Content-Type-Options": "nosniff",
        },
    )


@router.delete(
    "/{file_id:uuid}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**_CALLER, **problem_responses(404)},
)
async def delete_file(
    file_id: UUID,
    actor: Annotated[Actor, acting(Scope.files_write)],
    session: SessionDep,
    resources: ResourcesDep,
) -> None:
    """Delete a file: it is detached from its items, and its bytes are removed once the
    deletion has committed."""
    await file_service.delete(session, actor, file_id, storage=resources.storage)
