"""Per-request context shared by middleware, error handlers and log records."""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar

from starlette.types import Scope

REQUEST_ID_SCOPE_KEY = "app.request_id"
RESPONSE_HEADERS_SCOPE_KEY = "app.response_headers"

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)


def request_id_from_scope(scope: Scope) -> str | None:
    value = scope.get(REQUEST_ID_SCOPE_KEY)
    return value if isinstance(value, str) else request_id_var.get()


def add_response_headers(scope: Scope, headers: Mapping[str, str]) -> None:
    """Headers for whatever response this request ends with, an error or a response a
    route built itself included (`ResponseHeadersMiddleware` adds them)."""
    scope.setdefault(RESPONSE_HEADERS_SCOPE_KEY, {}).update(headers)
