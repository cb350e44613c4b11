"""Receive an upload: every file part goes straight to storage as it arrives.

While a file streams in it is counted (413 the moment it passes the limit), checked
against its declared content type (415 on its first bytes), hashed (SHA-256) and written
4 MiB at a time; the hash and the write of one block run in worker threads while the
next block is received. If anything fails, every file of the request already written
is deleted, and the one being written never gets a name: nothing is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import unicodedata
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Protocol

from anyio import to_thread

from app.core.config import FilesSettings
from app.core.errors import AppError, UnprocessableContent
from app.core.ids import uuid7
from app.core.multipart import Event, PartData, PartStart, parse
from app.core.sniff import SNIFF_BYTES, matches
from app.core.storage import Sink
from app.files.schemas import MAX_DESCRIPTION_CHARS

FILES_FIELD = "files"
DESCRIPTION_FIELD = "description"
# Big enough that thread hand-offs cost nothing next to the hashing and writing.
WRITE_BLOCK = 4 * 1024 * 1024
MAX_FILENAME_BYTES = 255


class ContentTooLarge(AppError):
    status = 413
    code = "content-too-large"


class UnsupportedMediaType(AppError):
    status = 415
    code = "unsupported-media-type"


@dataclass(frozen=True, slots=True)
class ReceivedFile:
    storage_key: str
    filename: str
    content_type: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Received:
    files: list[ReceivedFile]
    description: str | None


def upload_fingerprint(files: Iterable[tuple[str, str, str]], description: str | None) -> str:
    """What identifies an upload for `Idempotency-Key`: its files' names, types and
    SHA-256 and its description. Not the raw body: clients (httpx, browsers) choose a
    new multipart boundary for every retry of the same upload."""
    canonical = json.dumps(
        {"files": [list(file) for file in files], "description": description},
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def fingerprint_of_response(body: bytes) -> str:
    """The fingerprint of an upload, from the 201 body that answered it."""
    files = json.loads(body)
    description = files[0]["description"] if files else None
    return upload_fingerprint(
        ((file["filename"], file["content_type"], file["sha256"]) for file in files), description
    )


class _Discard:
    """Storage that keeps nothing: to fingerprint a repeated upload (app.files.dependencies)."""

    @contextlib.asynccontextmanager
    async def writer(self, key: str) -> AsyncIterator[Sink]:
        yield self

    async def write(self, chunk: bytes, /) -> None:
        return None

    async def delete(self, key: str) -> None:
        return None


async def fingerprint(
    content_type: str | None, body: AsyncIterator[bytes], *, limits: FilesSettings
) -> str:
    """The fingerprint of an upload body, read and checked as a first upload would be,
    without storing anything."""
    received = await receive(content_type, body, storage=_Discard(), limits=limits)
    files = ((file.filename, file.content_type, file.sha256) for file in received.files)
    return upload_fingerprint(files, received.description)


def sanitize_filename(raw: str) -> str:
    """The client's name, as metadata only: no directories, no control characters, no
    quotes, at most 255 bytes; never used as a path."""
    name = unicodedata.normalize("NFC", raw).replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(
        "_" if char in '"' or unicodedata.category(char)[0] == "C" else char for char in name
    ).strip(" .")
    while len(name.encode()) > MAX_FILENAME_BYTES:
        stem, dot, extension = name.rpartition(".")
        name = f"{stem[:-1]}{dot}{extension}" if dot and len(extension) < 16 else name[:-1]
    return name or "file"


class _Incoming:
    """One file on its way to storage."""

    def __init__(self, sink: Sink, *, content_type: str, max_bytes: int) -> None:
        self._sink = sink
        self.content_type = content_type
        self._max_bytes = max_bytes
        self._hash = hashlib.sha256()
        self._head = bytearray()
        self._checked = False
        self._block = bytearray()
        self._storing: asyncio.Future[None] | None = None
        self.size = 0

    async def feed(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self._max_bytes:
            msg = f"A file exceeds the limit of {self._max_bytes} bytes"
            raise ContentTooLarge(msg)
        if not self._checked:
            self._head += data[: SNIFF_BYTES - len(self._head)]
            if len(self._head) >= SNIFF_BYTES:
                self._check_type(whole=False)
        self._block += data
        if len(self._block) >= WRITE_BLOCK:
            await self._store_block()

    async def finish(self) -> str:
        """Write what is left; the hex SHA-256 of the whole file."""
        if not self._checked:
            self._check_type(whole=True)
        await self._store_block()
        if self._storing is not None:
            await self._storing
        return self._hash.hexdigest()

    def _check_type(self, *, whole: bool) -> None:
        self._checked = True
        if not matches(self.content_type, bytes(self._head), whole=whole):
            msg = f"The content of a file does not match its type {self.content_type}"
            raise UnsupportedMediaType(msg)

    async def _store_block(self) -> None:
        if self._storing is not None:
            await self._storing  # one block in flight at a time, in order
        if not self._block:
            self._storing = None
            return
        block, self._block = bytes(self._block), bytearray()
        self._storing = asyncio.ensure_future(self._store(block))

    async def settle(self) -> None:
        """Wait for the block in flight, if any, whatever became of it."""
        if self._storing is not None:
            with contextlib.suppress(Exception):
                await self._storing

    async def _store(self, block: bytes) -> None:
        await asyncio.gather(to_thread.run_sync(self._hash.update, block), self._sink.write(block))


class Writable(Protocol):
    """What an upload needs of storage."""

    def writer(self, key: str) -> contextlib.AbstractAsyncContextManager[Sink]: ...

    async def delete(self, key: str) -> None: ...


async def receive(
    content_type: str | None,
    body: AsyncIterator[bytes],
    *,
    storage: Writable,
    limits: FilesSettings,
) -> Received:
    """Stream the files of a `multipart/form-data` body (field `files`, repeatable, and an
    optional `description`) into storage."""
    receiver = _Receiver(storage, limits)
    try:
        async with contextlib.AsyncExitStack() as writers:
            async for event in parse(content_type, body):
                await receiver.handle(event, writers)
            receiver.check_complete()
    except BaseException:
        for file in receiver.stored:
            await storage.delete(file.storage_key)
        raise
    if not receiver.stored:
        raise UnprocessableContent("Send at least one file in the field `files`", field=FILES_FIELD)
    return Received(receiver.stored, receiver.description())


class _Receiver:
    def __init__(self, storage: Writable, limits: FilesSettings) -> None:
        self._storage = storage
        self._limits = limits
        self._part: PartStart | None = None
        self._incoming: _Incoming | None = None
        self._key = ""
        self._description: bytearray | None = None
        self.stored: list[ReceivedFile] = []

    async def handle(self, event: Event, writers: contextlib.AsyncExitStack) -> None:
        if isinstance(event, PartStart):
            await self._start(event, writers)
        elif isinstance(event, PartData):
            if self._incoming is not None:
                await self._incoming.feed(event.data)
            elif self._description is not None:
                self._description += event.data
                if len(self._description) > 4 * MAX_DESCRIPTION_CHARS:
                    raise UnprocessableContent("Too long", field=DESCRIPTION_FIELD)
        elif self._part is not None:
            if self._incoming is not None:
                await self._finish(self._part, self._incoming, writers)
            self._part, self._incoming = None, None

    async def _start(self, part: PartStart, writers: contextlib.AsyncExitStack) -> None:
        self._part = part
        if part.name == DESCRIPTION_FIELD and part.filename is None:
            self._description = bytearray()
            return
        if part.name != FILES_FIELD or part.filename is None:
            msg = f"Unexpected form field {part.name!r}; send `files` and `description`"
            raise UnprocessableContent(msg, field=part.name)
        declared = _accepted_type(part.content_type, self._limits, len(self.stored))
        self._key = f"files/{uuid7().hex}"
        sink = await writers.enter_async_context(self._storage.writer(self._key))
        incoming = _Incoming(sink, content_type=declared, max_bytes=self._limits.max_file_bytes)
        # On any error, let the block being written land before the writer is closed.
        writers.push_async_callback(incoming.settle)
        self._incoming = incoming

    async def _finish(
        self, part: PartStart, incoming: _Incoming, writers: contextlib.AsyncExitStack
    ) -> None:
        sha256 = await incoming.finish()
        await writers.aclose()  # the file gets its final name
        self.stored.append(
            ReceivedFile(
                storage_key=self._key,
                filename=sanitize_filename(part.filename or ""),
                content_type=incoming.content_type,
                size=incoming.size,
                sha256=sha256,
            )
        )

    def check_complete(self) -> None:
        if self._part is not None:
            msg = "The multipart body ended in the middle of a part"
            raise UnprocessableContent(msg, field=self._part.name)

    def description(self) -> str | None:
        if self._description is None:
            return None
        try:
            text = self._description.decode()
        except UnicodeDecodeError as exc:
            raise UnprocessableContent("Not UTF-8 text", field=DESCRIPTION_FIELD) from exc
        if len(text) > MAX_DESCRIPTION_CHARS:
            msg = f"At most {MAX_DESCRIPTION_CHARS} characters"
            raise UnprocessableContent(msg, field=DESCRIPTION_FIELD)
        return text


def _accepted_type(declared: str | None, limits: FilesSettings, count: int) -> str:
    if count >= limits.max_files_per_request:
        msg = f"At most {limits.max_files_per_request} files per upload"
        raise UnprocessableContent(msg, field=FILES_FIELD)
    if declared is None or declared not in limits.allowed_types:
        msg = f"Accepted content types: {', '.join(limits.allowed_types)}"
        raise UnsupportedMediaType(msg)
    return declared
