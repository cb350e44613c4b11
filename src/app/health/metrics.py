"""`GET /metrics`: the Prometheus text format, behind HTTP Basic credentials.

The per-request metrics come from the process-wide registry (app.core.observability).
Figures that live elsewhere are read at scrape time: the database pool, the jobs every
worker ran (counted in Redis, app.core.job_metrics), the queue, realtime connections.
Each API process answers for itself: scrape each one (one process per container is the
usual layout), or run a single process behind the scraper.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from arq.constants import default_queue_name
from fastapi import APIRouter, Depends
from fastapi.responses import PlainTextResponse
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4 as TEXT_FORMAT
from redis.exceptions import RedisError
from sqlalchemy.pool import QueuePool

from app.core import job_metrics
from app.core.dependencies import ResourcesDep
from app.core.errors import Unauthorized, problem_responses
from app.core.observability import REDIS_ERRORS
from app.core.resources import Resources
from app.realtime.dependencies import HubDep

router = APIRouter(tags=["health"])

basic = HTTPBasic(auto_error=False, description="METRICS_USERNAME and METRICS_PASSWORD.")


async def require_scraper(
    credentials: Annotated[HTTPBasicCredentials | None, Depends(basic)],
    resources: ResourcesDep,
) -> None:
    # The route exists only when both are configured (`create_app`).
    settings = resources.settings.observability
    assert settings.metrics_username is not None
    assert settings.metrics_password is not None
    # Compared in constant time, both parts, whatever the first comparison gave.
    user_ok = secrets.compare_digest(
        (credentials.username if credentials else "").encode(),
        settings.metrics_username.encode(),
    )
    password_ok = secrets.compare_digest(
        (credentials.password if credentials else "").encode(),
        settings.metrics_password.get_secret_value().encode(),
    )
    if not (user_ok and password_ok):
        raise Unauthorized("Metrics need valid credentials", headers={"WWW-Authenticate": "Basic"})


class _Snapshot:
    """Metrics read just now, as a collector for a throwaway registry."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


async def _snapshot(resources: Resources, connections: int) -> list[Metric]:
    families: list[Metric] = []
    pool = resources.engine.pool
    if isinstance(pool, QueuePool):
        database = GaugeMetricFamily(
            "db_pool_connections", "Database pool connections.", labels=["state"]
        )
        database.add_metric(["checked_out"], pool.checkedout())
        database.add_metric(["idle"], pool.checkedin())
        database.add_metric(["overflow"], max(0, pool.overflow()))
        families.append(database)
    realtime = GaugeMetricFamily("realtime_connections", "Open WebSocket and SSE connections.")
    realtime.add_metric([], connections)
    families.append(realtime)
    try:
        counts = await job_metrics.read(resources.redis)
        queued = await resources.arq.zcard(default_queue_name)
    except (RedisError, OSError):
        REDIS_ERRORS.labels("metrics").inc()
        return families
    runs = CounterMetricFamily(
        "jobs", "Jobs run by every worker, by function and outcome.", labels=["function", "outcome"]
    )
    for (function, outcome), count in sorted(counts.runs.items()):
        runs.add_metric([function, outcome], count)
    seconds = CounterMetricFamily(
        "job_duration_seconds", "Time spent running jobs, by function.", labels=["function"]
    )
    for function, total in sorted(counts.seconds.items()):
        seconds.add_metric([function], total)
    queue = GaugeMetricFamily("job_queue_depth", "Jobs waiting in the ARQ queue.")
    queue.add_metric([], queued)
    families += [runs, seconds, queue]
    return families


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    dependencies=[Depends(require_scraper)],
    responses={
        200: {"content": {TEXT_FORMAT: {}}, "description": "Prometheus text format"},
        **problem_responses(401, 404),
    },
)
async def metrics(resources: ResourcesDep, hub: HubDep) -> PlainTextResponse:
    """Prometheus metrics of this process (requests, latency, database pool, Redis
    errors, realtime connections) and of the job queue and its workers. Off unless
    METRICS_USERNAME and METRICS_PASSWORD are set."""
    scrape = CollectorRegistry(auto_describe=False)
    scrape.register(_Snapshot(await _snapshot(resources, hub.connections)))
    body = generate_latest(REGISTRY) + generate_latest(scrape)
    return PlainTextResponse(body, media_type=TEXT_FORMAT, headers={"Cache-Control": "no-store"})
