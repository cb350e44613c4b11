from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any, Literal

from fastapi import APIRouter, Request, Response, status
from pydantic import BaseModel
from sqlalchemy import text

from app.core.breaker import pooler_hint
from app.core.dependencies import ResourcesDep
from app.core.lifecycle import Shutdown

router = APIRouter(prefix="/health", tags=["health"])

CHECK_TIMEOUT_SECONDS = 1.5


class Live(BaseModel):
    status: Literal["ok"] = "ok"


class Check(BaseModel):
    status: Literal["ok", "error"]
    latency_ms: float | None = None
    error: str | None = None


class Readiness(BaseModel):
    # "draining": told to stop (SIGTERM); still serving for SHUTDOWN_DRAIN_SECONDS.
    status: Literal["ok", "error", "draining"]
    checks: dict[str, Check]


# The body never changes: rendered once, not validated and serialised per probe. The
# edge layer answers GET /health/live with it itself (app.core.middleware.EdgeMiddleware);
# the route documents it and answers what the edge passes on (a request with an Origin).
LIVE_BODY = Live().model_dump_json().encode()
LIVE_PATH = "/health/live"


@router.get("/live", response_model=Live)
async def live() -> Response:
    """200 as long as the process serves requests; touches nothing else."""
    return Response(LIVE_BODY, media_type="application/json")


@router.get(
    "/ready",
    responses={503: {"model": Readiness, "description": "A dependency is down"}},
    # An ok check shows its latency, a failed one its error: not both as null.
    response_model_exclude_none=True,
)
async def ready(request: Request, resources: ResourcesDep, response: Response) -> Readiness:
    """200 when PostgreSQL and Redis both answer within 1.5 s, else 503; names each check.
    503 `draining` once the process was told to stop (it still serves meanwhile)."""
    shutdown = getattr(request.state, "shutdown", None)
    if isinstance(shutdown, Shutdown) and shutdown.draining:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        response.headers["Cache-Control"] = "no-store"
        return Readiness(status="draining", checks={})

    async def database() -> None:
        async with resources.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def redis() -> None:
        await resources.redis.ping()

    database_check, redis_check = await asyncio.gather(_timed(database()), _timed(redis()))
    checks = {"database": database_check, "redis": redis_check}
    healthy = all(check.status == "ok" for check in checks.values())
    if not healthy:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    response.headers["Cache-Control"] = "no-store"
    return Readiness(status="ok" if healthy else "error", checks=checks)


# Probes that outlived their check, still finishing (their connection's cleanup).
_LINGERING: set[asyncio.Task[None]] = set()


async def _timed(probe: Coroutine[Any, Any, None]) -> Check:
    """Run `probe` for up to CHECK_TIMEOUT_SECONDS. One that takes longer is reported
    and left to finish on its own: cancelling it would make this answer wait for the
    connection's cleanup, which against a server that hangs takes as long again."""
    started = time.perf_counter()
    task = asyncio.ensure_future(probe)
    done, _ = await asyncio.wait({task}, timeout=CHECK_TIMEOUT_SECONDS)
    if not done:
        _LINGERING.add(task)
        task.add_done_callback(_forget)
        return Check(status="error", error="TimeoutError")
    exc = task.exception()
    if exc is not None:
        hint = pooler_hint(exc)
        return Check(
            status="error", error=f"{type(exc).__name__} ({hint})" if hint else type(exc).__name__
        )
    return Check(status="ok", latency_ms=round((time.perf_counter() - started) * 1000, 2))


def _forget(task: asyncio.Task[None]) -> None:
    _LINGERING.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved: it was reported as a timeout already
