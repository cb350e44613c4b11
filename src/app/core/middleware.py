"""Pure ASGI middleware (no BaseHTTPMiddleware: it buffers, breaks streaming and costs
a task per request)."""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Iterable, Mapping

from starlette.exceptions import HTTPException
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.context import REQUEST_ID_SCOPE_KEY, RESPONSE_HEADERS_SCOPE_KEY, request_id_var
from app.core.errors import problem
from app.core.http import is_operational
from app.core.observability import ANSWERED_ROUTE_KEY, request_finished, request_started

REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID_KEY = REQUEST_ID_HEADER.lower().encode("latin-1")
_WELL_FORMED_ID = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")

RawHeaders = list[tuple[bytes, bytes]]


def _raw(headers: Iterable[tuple[str, str]]) -> RawHeaders:
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]


def _add_missing(message: Message, additions: RawHeaders) -> None:
    """Append to a response's raw headers those of `additions` it does not have: on
    bytes, without Starlette's header objects (every response pays for this)."""
    headers = list(message.get("headers", ()))
    present = {name.lower() for name, _ in headers}
    for name, value in additions:
        if name not in present:
            headers.append((name, value))
            present.add(name)
    message["headers"] = headers


class BodySizeLimitMiddleware:
    """Refuse a request body above `max_bytes` (or the limit `per_path` gives its exact
    path, such as the upload route's) with 413, and one that stalls with 408.

    A declared `Content-Length` above the limit is refused before the application runs
    or reads anything; a body without one (chunked) is counted while it streams in and
    refused the moment it passes the limit. While a body is still coming, each wait for
    its next part is bounded by `stall_seconds` (after the body, a wait is for the
    client to disconnect, which streams do for hours, and is not bounded).
    """

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        per_path: Mapping[str, int] | None = None,
        stall_seconds: float = 30.0,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.per_path = dict(per_path or {})
        self.stall_seconds = stall_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.per_path.get(scope["path"], self.max_bytes)
        declared: str | None = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = value.decode("latin-1")
            elif name == b"transfer-encoding":
                chunked = True
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            status = 413 if declared.isdigit() else 400
            detail = (
                f"The request body exceeds {limit} bytes"
                if status == 413
                else "Invalid Content-Length header"
            )
            response = problem(Request(scope), status=status, detail=detail)
            await response(scope, receive, send)
            return
        if declared is None and not chunked:  # no body (RFC 9112, 6.3): nothing to count
            await self.app(scope, receive, send)
            return

        received = 0
        complete = False

        async def receive_limited() -> Message:
            nonlocal received, complete
            if complete:
                return await receive()
            try:
                async with asyncio.timeout(self.stall_seconds):
                    message = await receive()
            except TimeoutError:
                detail = f"No part of the request body arrived for {self.stall_seconds:g} s"
                raise HTTPException(408, detail, headers={"Connection": "close"}) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if received > limit:
                    raise HTTPException(413, f"The request body exceeds {limit} bytes")
            return message

        await self.app(scope, receive_limited, send)


# Nothing may load from an API response, and nothing may frame it.
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
# Swagger UI and ReDoc: FastAPI's pages load their bundles from jsDelivr, run one inline
# script, use Google Fonts (ReDoc) and blob: workers, and call the API itself.
DOCS_CSP = (
    "default-src 'none'; "
    "script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    "font-src https://fonts.gstatic.com; "
    "img-src 'self' data: https://fastapi.tiangolo.com https://cdn.redoc.ly; "
    "connect-src 'self'; worker-src blob:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


class EdgeMiddleware:
    """The outermost layer, in one pass (each ASGI layer costs every request a call
    and a `send` wrapper; these three were three layers):

    - **Request id.** Accept a well-formed incoming `X-Request-ID`, else make one; echo
      it on the response and expose it to logs (context variable) and problem bodies
      (scope). WebSockets get one too.
    - **Access log and metrics.** Time every HTTP request, count it, log it once it is
      answered (app.core.observability).
    - **Headers every response carries:** no MIME sniffing, no referrer, no framing, a
      Content-Security-Policy that forbids everything on API responses (and allows
      what the docs pages need on them), HSTS when the service is served over HTTPS;
      and the headers a dependency registered for this request
      (`add_response_headers`, such as the rate limit's), which errors and responses
      built by a route would otherwise lose. A header the response already has is left
      as it is.
    - **Liveness.** `GET live_path` is answered here with `live_body`, the bytes its
      route answers, and the same headers: it only says that the process serves
      requests, which this layer shows as well as the router, and orchestrators call it
      often. (A request with an `Origin` goes through, for CORS to see it.)
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        docs_paths: frozenset[str],
        hsts_seconds: int = 0,
        live_path: str | None = None,
        live_body: bytes = b"",
    ) -> None:
        self.app = app
        self.docs_paths = docs_paths
        self.live_path = live_path
        self.live_headers = _raw(
            [("content-length", str(len(live_body))), ("content-type", "application/json")]
        )
        self.live_body = live_body
        fixed = [
            ("X-Content-Type-Options", "nosniff"),
            ("Referrer-Policy", "no-referrer"),
            ("X-Frame-Options", "DENY"),
            ("Cross-Origin-Opener-Policy", "same-origin"),
        ]
        if hsts_seconds:
            fixed.append(
                ("Strict-Transport-Security", f"max-age={hsts_seconds}; includeSubDomains")
            )
        self.api_headers = _raw([*fixed, ("Content-Security-Policy", API_CSP)])
        self.docs_headers = _raw([*fixed, ("Content-Security-Policy", DOCS_CSP)])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        scope[REQUEST_ID_SCOPE_KEY] = request_id
        token = request_id_var.set(request_id)
        try:
            if kind == "websocket":
                await self._websocket(scope, receive, send, request_id)
            else:
                await self._http(scope, receive, send, request_id)
        finally:
            request_id_var.reset(token)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        echoed = [(_REQUEST_ID_KEY, request_id.encode("latin-1"))]

        async def send_with_id(message: Message) -> None:
            if message["type"] == "websocket.accept":
                _add_missing(message, echoed)
            await send(message)

        await self.app(scope, receive, send_with_id)

    async def _http(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        method = scope["method"]
        started = time.perf_counter()
        status = 500  # unless a response starts
        defaults = self.docs_headers if scope["path"] in self.docs_paths else self.api_headers
        request_started(method)

        async def send_edge(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                registered: Mapping[str, str] | None = scope.get(RESPONSE_HEADERS_SCOPE_KEY)
                _add_missing(
                    message,
                    [
                        (_REQUEST_ID_KEY, request_id.encode("latin-1")),
                        *(_raw(registered.items()) if registered else ()),
                        *defaults,
                        *(_CLOSE if _draining(scope) else ()),
                    ],
                )
            await send(message)

        try:
            if method == "GET" and scope["path"] == self.live_path and not _has_origin(scope):
                scope[ANSWERED_ROUTE_KEY] = self.live_path
                status = 200
                await send_edge(
                    {"type": "http.response.start", "status": 200, "headers": self.live_headers}
                )
                await send({"type": "http.response.body", "body": self.live_body})
            else:
                await self.app(scope, receive, send_edge)
        finally:
            request_finished(scope, method, status, time.perf_counter() - started)


# While the process drains, every response closes its connection: a client or proxy
# holding an idle keep-alive connection would otherwise send its next request just as
# the server closes it (a POST lost that way is a 502 at the proxy, which cannot resend
# it); on a new connection it reaches a process that stays.
_CLOSE = _raw([("connection", "close")])


def _draining(scope: Scope) -> bool:
    state = scope.get("state")
    shutdown = state.get("shutdown") if isinstance(state, dict) else None
    return bool(getattr(shutdown, "draining", False))


def _has_origin(scope: Scope) -> bool:
    return any(name == b"origin" for name, _ in scope["headers"])


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == _REQUEST_ID_KEY:
            incoming: str = value.decode("latin-1")
            if _WELL_FORMED_ID.match(incoming):
                return incoming
            break
    return os.urandom(16).hex()  # 128 random bits, as uuid4().hex without its cost


class GZipWhenAcceptedMiddleware(GZipMiddleware):
    """Starlette's GZip, entered only by requests that accept gzip: the others would
    pay for a `send` wrapper that never compresses (it only adds `Vary`, which a
    response that is not compressed does not need)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"accept-encoding" and b"gzip" in value:
                    await super().__call__(scope, receive, send)
                    return
        await self.app(scope, receive, send)


class HealthExemptTrustedHostMiddleware:
    """Refuse a request whose `Host` is not one of `allowed_hosts` (exact names, or
    `*.example.com` for subdomains) with a 400 problem, as every other error; a
    WebSocket is closed with 1008. The health probes and the metrics are exempt:
    orchestrators and scrapers send a pod's own address (Kubernetes uses the pod IP as
    Host; /metrics has credentials of its own). Starlette's TrustedHostMiddleware does
    the same check but answers `text/plain`."""

    def __init__(self, app: ASGIApp, allowed_hosts: Iterable[str]) -> None:
        self.app = app
        self.allowed = [pattern.lower() for pattern in allowed_hosts]
        self.allow_any = "*" in self.allowed
        for pattern in self.allowed:
            wildcard = pattern.startswith("*.") and "*" not in pattern[1:]
            if pattern != "*" and "*" in pattern and not wildcard:
                raise ValueError(f"host patterns look like '*.example.com', not {pattern!r}")

    def _trusted(self, scope: Scope) -> bool:
        host = _host_of(scope)
        return host is not None and any(
            host == pattern or (pattern.startswith("*.") and host.endswith(pattern[1:]))
            for pattern in self.allowed
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if (
            self.allow_any
            or kind not in ("http", "websocket")
            or (kind == "http" and is_operational(scope["path"]))
            or self._trusted(scope)
        ):
            await self.app(scope, receive, send)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": "invalid host"})
        else:
            response = problem(
                Request(scope),
                status=400,
                detail="The Host header names no host this service answers for",
                code="invalid-host",
            )
            await response(scope, receive, send)


def _host_of(scope: Scope) -> str | None:
    """The host of the `Host` header, lower case and without its port; None if absent."""
    for name, value in scope["headers"]:
        if name == b"host":
            host = value.decode("latin-1").strip().lower()
            if host.startswith("["):  # an IPv6 literal, [::1]:8000
                return host[: host.find("]") + 1] or None
            return host.rsplit(":", 1)[0] if host.count(":") == 1 else host or None
    return None
