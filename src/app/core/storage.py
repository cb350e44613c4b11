"""Where the service keeps bytes: a small interface, implemented on a local directory.

The interface streams both ways, so an object store can implement it later: `writer`
takes chunks as they come (an S3 implementation maps it to a multipart upload) and
publishes the object only when the block ends without error; nothing is ever passed
as a whole file in memory. Reading is a path for `FileResponse` here (sendfile, ranges);
an object store would answer with a redirect to a signed URL instead.

On a local directory, writes go to a temporary name and are renamed into place only
when complete, so a reader never sees half a file and a failed writer leaves no file
under the final key. A writer killed outright (SIGKILL) cannot remove its temporary
file; `remove_stale_partials`, run by a cron job, does. Keys are relative paths made by
the service, never by clients.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Protocol

import anyio

from app.core.ids import uuid7

_KEY = re.compile(r"^[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)*$")


class Sink(Protocol):
    async def write(self, chunk: bytes, /) -> object: ...


class Storage(Protocol):
    def writer(self, key: str) -> contextlib.AbstractAsyncContextManager[Sink]: ...

    async def delete(self, key: str) -> None: ...

    async def exists(self, key: str) -> bool: ...

    def local_path(self, key: str) -> Path: ...

    async def remove_stale_partials(self, *, older_than: timedelta) -> int:
        """Clean up writes that were never finished (an object store: abort stale
        multipart uploads)."""
        ...


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def local_path(self, key: str) -> Path:
        if not _KEY.match(key) or ".." in key:
            msg = f"invalid storage key: {key!r}"
            raise ValueError(msg)
        return self.root / key

    @contextlib.asynccontextmanager
    async def writer(self, key: str) -> AsyncIterator[Sink]:
        final = self.local_path(key)
        partial = final.with_name(f".{final.name}.{uuid7().hex}.part")
        await anyio.Path(final.parent).mkdir(parents=True, exist_ok=True)
        try:
            async with await anyio.open_file(partial, "wb") as sink:
                yield sink
            await anyio.to_thread.run_sync(os.replace, partial, final)
        finally:
            await anyio.Path(partial).unlink(missing_ok=True)

    async def delete(self, key: str) -> None:
        await anyio.Path(self.local_path(key)).unlink(missing_ok=True)

    async def exists(self, key: str) -> bool:
        return await anyio.Path(self.local_path(key)).is_file()

    async def remove_stale_partials(self, *, older_than: timedelta) -> int:
        """Delete temporary files no writer has touched for `older_than`; how many."""
        cutoff = time.time() - older_than.total_seconds()
        return await anyio.to_thread.run_sync(self._remove_partials_before, cutoff)

    def _remove_partials_before(self, cutoff: float) -> int:
        removed = 0
        for path in self.root.rglob(".*.part"):
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
        return removed
