"""Per-request context shared by middleware, error handlers and log records."""

from __future__ import annotations

from contextvars import ContextVar

from starlette.types import Scope

REQUEST_ID_SCOPE_KEY = "app.request_id"

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)


def request_id_from_scope(scope: Scope) -> str | None:
    value = scope.get(REQUEST_ID_SCOPE_KEY)
    return value if isinstance(value, str) else request_id_var.get()
