"""Per-request context shared by middleware, error handlers and log records."""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar

from starlette.types import Scope

REQUEST_ID_SCOPE_KEY = "app.request_id"
RESPONSE_HEADERS_SCOPE_KEY = "app.response_headers"
PREFETCH_SCOPE_KEY = "app.prefetch"

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)


def request_id_from_scope(scope: Scope) -> str | None:
    value = scope.get(REQUEST_ID_SCOPE_KEY)
    return value if isinstance(value, str) else request_id_var.get()


def add_response_headers(scope: Scope, headers: Mapping[str, str]) -> None:
    """Headers for whatever response this request ends with, an error or a response a
    route built itself included (`EdgeMiddleware` adds them)."""
    scope.setdefault(RESPONSE_HEADERS_SCOPE_KEY, {}).update(headers)


def want_from_redis(scope: Scope, key: str) -> None:
    """Ask for `key` to be read in the round trip to Redis that authentication makes
    anyway (app.auth.accounts), so a route that needs one value from Redis, such as
    a cached item, saves a round trip of its own. Declare it in a dependency that runs
    before authentication."""
    scope.setdefault(PREFETCH_SCOPE_KEY, {})[key] = _PENDING


def fetched_from_redis(scope: Scope, key: str) -> tuple[bool, str | None]:
    """Whether `key` was read with authentication, and its value (None: no such key)."""
    wanted: dict[str, object] | None = scope.get(PREFETCH_SCOPE_KEY)
    value = _PENDING if wanted is None else wanted.get(key, _PENDING)
    if value is _PENDING:
        return False, None
    return True, value if isinstance(value, str) else None


_PENDING = object()
