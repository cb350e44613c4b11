"""What every request leaves behind: one access-log line and its Prometheus metrics.

The edge middleware (app.core.middleware) times a request once and calls
`request_finished`, which reads, after the application ran:
- the route template from `scope["route"]` (set by the router), never the raw path, so
  neither ids nor query strings (tokens) reach the log or the metric labels;
- the caller's user id, which the authentication dependency leaves in the scope.

The metrics are process-wide (prometheus_client's default registry); figures that live
elsewhere (the database pool, jobs run by workers, the queue) are read when /metrics is
scraped (app.health.metrics).
"""

from __future__ import annotations

import logging

from prometheus_client import Counter, Gauge, Histogram
from starlette.types import Scope

USER_ID_SCOPE_KEY = "app.user_id"
UNMATCHED_ROUTE = "<unmatched>"
# Set by a layer that answers a request before the router (the edge's liveness answer).
ANSWERED_ROUTE_KEY = "app.answered_route"

logger = logging.getLogger("app.access")

REQUESTS = Counter(
    "http_requests", "HTTP requests answered.", ["method", "route", "status"]
)  # fmt: skip
LATENCY = Histogram(
    "http_request_duration_seconds",
    "Time from the request's arrival to the end of its response.",
    ["method", "route"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
IN_PROGRESS = Gauge("http_requests_in_progress", "HTTP requests being answered.", ["method"])
REDIS_ERRORS = Counter(
    "redis_errors", "Redis commands that failed (the service answered 503 or degraded).", ["where"]
)


def route_template(scope: Scope) -> str:
    """The matched route's full path template (`/api/v1/items/{item_id}`).

    Since FastAPI 0.137 routers are included without copying their routes, so
    `scope["route"].path` lacks the prefixes of the routers it was included through; the
    full template is in FastAPI's effective route context (what its own OpenTelemetry
    uses for `http.route`). tests/core/test_middleware.py pins this down.
    """
    answered: str | None = scope.get(ANSWERED_ROUTE_KEY)
    if answered is not None:
        return answered
    fastapi_scope = scope.get("fastapi")
    context = fastapi_scope.get("effective_route_context") if fastapi_scope else None
    path = getattr(context, "path_format", None) or getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) and path else UNMATCHED_ROUTE


QUIET_PREFIXES = ("/health/",)  # probes poll every few seconds: DEBUG, not INFO


class _Children:
    """The metrics' labelled children, looked up once per label values: `labels()`
    takes a lock and builds a tuple on every call."""

    def __init__(self) -> None:
        self._requests: dict[tuple[str, str, int], Counter] = {}
        self._latency: dict[tuple[str, str], Histogram] = {}
        self._in_progress: dict[str, Gauge] = {}

    def in_progress(self, method: str) -> Gauge:
        gauge = self._in_progress.get(method)
        if gauge is None:
            gauge = self._in_progress[method] = IN_PROGRESS.labels(method)
        return gauge

    def record(self, method: str, route: str, status: int, elapsed: float) -> None:
        counter = self._requests.get((method, route, status))
        if counter is None:
            counter = REQUESTS.labels(method, route, str(status))
            self._requests[method, route, status] = counter
        counter.inc()
        histogram = self._latency.get((method, route))
        if histogram is None:
            histogram = self._latency[method, route] = LATENCY.labels(method, route)
        histogram.observe(elapsed)


# Label values are bounded: methods, route templates (never raw paths) and statuses.
_children = _Children()


def request_started(method: str) -> None:
    _children.in_progress(method).inc()


def request_finished(scope: Scope, method: str, status: int, elapsed: float) -> None:
    """Count and time an answered HTTP request, and log it (app.core.middleware's
    EdgeMiddleware calls this once the response has been sent, or failed)."""
    _children.in_progress(method).dec()
    route = route_template(scope)
    _children.record(method, route, status, elapsed)
    if status >= 500:
        level = logging.WARNING
    elif scope["path"].startswith(QUIET_PREFIXES):
        level = logging.DEBUG
    else:
        level = logging.INFO
    if logger.isEnabledFor(level):
        _log(scope, level, method, route, status, elapsed)


def _log(scope: Scope, level: int, method: str, route: str, status: int, elapsed: float) -> None:
    user_id = scope.get(USER_ID_SCOPE_KEY, "-")
    client = scope.get("client")
    logger.log(
        level,
        "%s %s %s %.1fms user=%s",
        method,
        route,
        status,
        elapsed * 1000,
        user_id,
        extra={
            "http": {
                "method": method,
                "route": route,
                "status": status,
                "duration_ms": round(elapsed * 1000, 2),
                "user_id": user_id if user_id != "-" else None,
                "client": client[0] if client else None,
            }
        },
    )
