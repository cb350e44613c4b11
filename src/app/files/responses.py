"""`FileResponse` whose range errors are problem details, like every other error."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import FileResponse, MalformedRangeHeader, RangeNotSatisfiable
from starlette.types import Receive, Scope, Send

from app.core.errors import problem


class StoredFileResponse(FileResponse):
    """Starlette serves ranges (206, multipart/byteranges, `If-Range`) but answers a bad
    or unsatisfiable `Range` in plain text; this checks the header first, the way
    Starlette does, and answers those two cases as problems (400, 416)."""

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
            except MalformedRangeHeader as exc:
                response = problem(Request(scope), status=400, detail=exc.content)
                await response(scope, receive, send)
                return
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
