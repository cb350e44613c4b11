"""What every request leaves behind: one access-log line and its Prometheus metrics.

One pure ASGI middleware does both, so a request is timed once. It reads, after the
application ran:
- the route template from `scope["route"]` (set by the router), never the raw path, so
  neither ids nor query strings (tokens) reach the log or the metric labels;
- the caller's user id, which the authentication dependency leaves in the scope.

The metrics are process-wide (prometheus_client's default registry); figures that live
elsewhere (the database pool, jobs run by workers, the queue) are read when /metrics is
scraped (app.health.metrics).
"""

from __future__ import annotations

import logging
import time

from prometheus_client import Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

USER_ID_SCOPE_KEY = "app.user_id"
UNMATCHED_ROUTE = "<unmatched>"

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
    fastapi_scope = scope.get("fastapi")
    context = fastapi_scope.get("effective_route_context") if fastapi_scope else None
    path = getattr(context, "path_format", None) or getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) and path else UNMATCHED_ROUTE


class ObservabilityMiddleware:
    """Time every HTTP request; count it; log it once it is answered."""

    def __init__(self, app: ASGIApp, *, quiet_prefixes: tuple[str, ...] = ("/health/",)) -> None:
        self.app = app
        # Probes poll every few seconds: their lines go to DEBUG, not INFO.
        self.quiet_prefixes = quiet_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        started = time.perf_counter()
        status = 500  # unless a response starts
        in_progress = IN_PROGRESS.labels(method)
        in_progress.inc()

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            in_progress.dec()
            elapsed = time.perf_counter() - started
            route = route_template(scope)
            REQUESTS.labels(method, route, str(status)).inc()
            LATENCY.labels(method, route).observe(elapsed)
            self._log(scope, method, route, status, elapsed)

    def _log(self, scope: Scope, method: str, route: str, status: int, elapsed: float) -> None:
        if status >= 500:
            level = logging.WARNING
        elif scope["path"].startswith(self.quiet_prefixes):
            level = logging.DEBUG
        else:
            level = logging.INFO
        if not logger.isEnabledFor(level):
            return
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
