"""`FileResponse` that follows RFC 9110 on `Range` and answers its errors as problems."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import FileResponse, MalformedRangeHeader, RangeNotSatisfiable
from starlette.types import Receive, Scope, Send

from app.core.errors import problem

# More ranges than this (after merging overlapping ones) get the whole file: each part
# of a multipart/byteranges answer costs ~100 bytes of headers, so 100 one-byte ranges
# of a small file made a response 25 times its size.
MAX_RANGES = 8


class StoredFileResponse(FileResponse):
    """Starlette serves ranges (206, multipart/byteranges, `If-Range`), but answers 400
    to a `Range` it cannot parse (`bytes=9-0`, `items=0-5`), which RFC 9110 (section
    14.2) says to ignore, and an unsatisfiable one in plain text. Here an unparsable or
    unknown-unit `Range`, or one of more than MAX_RANGES ranges, is ignored (200, the
    whole file); an unsatisfiable one is a 416 problem with `Content-Range`."""

    max_ranges = MAX_RANGES

    @classmethod
    def _parse_range_header(cls, http_range: str, file_size: int) -> list[tuple[int, int]]:
        try:
            ranges = super()._parse_range_header(http_range, file_size)
        except MalformedRangeHeader:
            return []
        return ranges if len(ranges) <= MAX_RANGES else []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers(scope=scope)
        http_range, if_range = headers.get("range"), headers.get("if-range")
        if (
            http_range is not None
            and self.stat_result is not None
            and self.status_code == 200
            and (if_range is None or self._should_use_range(if_range))
        ):
            try:
                self._parse_range_header(http_range, self.stat_result.st_size)
            except RangeNotSatisfiable as exc:
                response = problem(
                    Request(scope),
                    status=416,
                    detail=f"The file has {exc.max_size} bytes; no requested range is in it",
                    headers={"Content-Range": f"bytes */{exc.max_size}"},
                )
                await response(scope, receive, send)
                return
        await super().__call__(scope, receive, send)
