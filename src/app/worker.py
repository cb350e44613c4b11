"""The ARQ worker: every domain's `tasks.py`, built from the same `Resources` as the API.

Run it with `app worker` (or `make worker`); `app worker --check` exits 0 while a worker
has recorded its health key recently. `create_worker(settings)` is also what the tests
use, with `burst=True`.
"""

from __future__ import annotations

import dataclasses
from contextlib import AsyncExitStack
from typing import Any

from arq.cron import CronJob
from arq.worker import Function, Worker

from app.auth.tasks import CRON_JOBS as AUTH_CRON_JOBS
from app.auth.tasks import FUNCTIONS as AUTH_FUNCTIONS
from app.core.config import Settings
from app.core.resources import Resources, arq_redis_settings, build_redis
from app.items.tasks import FUNCTIONS as ITEM_FUNCTIONS
from app.jobs.tasks import CRON_JOBS as JOB_CRON_JOBS

FUNCTIONS: list[Function] = [*AUTH_FUNCTIONS, *ITEM_FUNCTIONS]
CRON_JOBS: list[CronJob] = [*AUTH_CRON_JOBS, *JOB_CRON_JOBS]
HEALTH_CHECK_KEY = "arq:app:health-check"


async def startup(ctx: dict[str, Any]) -> None:
    # A caller (a test) may hand in ready resources; otherwise open our own.
    if "resources" in ctx:
        return
    stack = AsyncExitStack()
    ctx["resources"] = await stack.enter_async_context(Resources.open(ctx["settings"]))
    ctx["exit_stack"] = stack


async def shutdown(ctx: dict[str, Any]) -> None:
    stack: AsyncExitStack | None = ctx.pop("exit_stack", None)
    if stack is not None:
        await stack.aclose()


class WorkerSettings:
    """The worker's fixed configuration; `create_worker` adds what comes from `Settings`.

    Per-function timeouts and tries are set where each job is declared (`tasks.py`);
    these are the defaults for anything that does not say.
    """

    functions = FUNCTIONS
    cron_jobs = CRON_JOBS
    on_startup = startup
    on_shutdown = shutdown
    job_timeout = 60
    keep_result = 3600
    max_tries = 5
    health_check_interval = 30
    health_check_key = HEALTH_CHECK_KEY


async def health_record(settings: Settings) -> str | None:
    """What a running worker last recorded under its health-check key (its counters),
    or None when no worker has done so in the last `health_check_interval` + 1 s."""
    redis = build_redis(settings)
    try:
        record: str | None = await redis.get(HEALTH_CHECK_KEY)
    finally:
        await redis.aclose(close_connection_pool=True)
    return record


def create_worker(settings: Settings, **overrides: Any) -> Worker:
    options: dict[str, Any] = {
        name: value for name, value in vars(WorkerSettings).items() if not name.startswith("_")
    }
    options |= {
        # CronJob objects remember their next run: each worker gets its own.
        "cron_jobs": [dataclasses.replace(cron_job) for cron_job in CRON_JOBS],
        "redis_settings": arq_redis_settings(settings),
        "ctx": {"settings": settings},
        "max_jobs": settings.worker.max_jobs,
        "poll_delay": settings.worker.poll_delay_seconds,
        # On SIGTERM: stop taking jobs, let running ones finish for this long.
        "job_completion_wait": settings.worker.shutdown_grace_seconds,
    }
    return Worker(**(options | overrides))
