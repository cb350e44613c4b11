"""The ARQ worker: every domain's `tasks.py`, built from the same `Resources` as the API.

Run it with `app worker` (or `make worker`); `app worker --check` exits 0 while the
worker of the same `WORKER_NAME` (the host name by default) has recorded its health
key recently. `create_worker(settings)` is also what the tests
use, with `burst=True`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from contextlib import AsyncExitStack
from typing import Any

from arq.cron import CronJob
from arq.worker import Function, Worker
from redis.exceptions import RedisError

from app.auth.tasks import CRON_JOBS as AUTH_CRON_JOBS
from app.auth.tasks import FUNCTIONS as AUTH_FUNCTIONS
from app.core.collector import tuned_collector
from app.core.config import Settings
from app.core.resources import Resources, arq_redis_settings, build_redis
from app.items.tasks import FUNCTIONS as ITEM_FUNCTIONS
from app.jobs.tasks import CRON_JOBS as JOB_CRON_JOBS

logger = logging.getLogger(__name__)

FUNCTIONS: list[Function] = [*AUTH_FUNCTIONS, *ITEM_FUNCTIONS]
CRON_JOBS: list[CronJob] = [*AUTH_CRON_JOBS, *JOB_CRON_JOBS]
HEALTH_CHECK_PREFIX = "arq:app:health-check:"
# While Redis is unreachable, a worker tries again after 0.1 s, 0.2 s, 0.4 s... at most
# this long apart: it takes jobs again at most this long after Redis is back.
REDIS_RETRY_MAX_SECONDS = 1.0


class AppWorker(Worker):
    """ARQ's worker, made to outlive a Redis outage.

    ARQ lets any Redis error out of its poll loop (reading the queue, recording its
    health, queueing a cron job, or a job whose end could not be recorded), which ends
    `Worker.main()` and, with it, `app worker` (exit 1) the moment Redis restarts. Here
    a poll that fails on Redis is logged once, waited out with a short backoff and tried
    again; redis-py opens fresh connections by itself once Redis answers. Jobs queued
    before the outage are still queued after it, if Redis kept its data (see README.md,
    "Outages"); a job whose end could not be recorded runs again once its lease lapses,
    as after a crash (jobs are idempotent).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._redis_down_since: float | None = None
        self._redis_retries = 0

    async def _poll_iteration(self) -> None:
        try:
            await super()._poll_iteration()
        except (RedisError, OSError) as exc:
            await self._redis_unreachable(exc)
            return
        if self._redis_down_since is not None:
            logger.warning(
                "Redis is reachable again after %.1f s; taking jobs again",
                time.monotonic() - self._redis_down_since,
            )
            self._redis_down_since, self._redis_retries = None, 0
            # Record the health key now, not up to `health_check_interval` later: it may
            # have lapsed during the outage (`app worker --check` reads it).
            self._last_health_check = 0

    async def _redis_unreachable(self, exc: BaseException) -> None:
        if self._redis_down_since is None:
            self._redis_down_since = time.monotonic()
            logger.warning(
                "Redis unreachable (%s: %s); running jobs go on, new ones wait for it",
                type(exc).__name__,
                exc,
            )
        else:
            logger.debug("Redis still unreachable: %s: %s", type(exc).__name__, exc)
        delay = min(REDIS_RETRY_MAX_SECONDS, 0.1 * 2 ** min(self._redis_retries, 10))
        self._redis_retries += 1
        await asyncio.sleep(delay)

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        """ARQ's, one job at a time, giving back the slot (a count and a semaphore
        permit) that ARQ takes before it claims the job in Redis and keeps when that
        claim fails on a lost connection: a few such failures would leave a worker with
        no free slot, waiting forever."""
        for job_id in job_ids:
            if self.job_counter >= self.max_jobs:
                return
            try:
                await super().start_jobs([job_id])
            except (RedisError, OSError):
                self.job_counter -= 1
                self.sem.release()
                raise


def job_settings(settings: Settings) -> Settings:
    """`settings` with the jobs' own statement timeout in place of the requests'."""
    database = settings.database.model_copy(
        update={"statement_timeout_ms": settings.worker.statement_timeout_ms}
    )
    return settings.model_copy(update={"database": database})


async def startup(ctx: dict[str, Any]) -> None:
    # A caller (a test) may hand in ready resources; otherwise open our own.
    if "resources" in ctx:
        return
    stack = AsyncExitStack()
    resources = Resources.open(job_settings(ctx["settings"]), role="worker")
    ctx["resources"] = await stack.enter_async_context(resources)
    stack.enter_context(tuned_collector(ctx["settings"].gc_young_threshold))
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


def health_check_key(settings: Settings) -> str:
    """Each worker records its health under its own name (`WORKER_NAME`): one worker
    alive must not make another, frozen one look healthy."""
    return HEALTH_CHECK_PREFIX + settings.worker.name


async def health_record(settings: Settings) -> str | None:
    """What the worker named in `settings` last recorded under its health-check key
    (its counters), or None when it has not done so in the last
    `health_check_interval` + 1 s."""
    redis = build_redis(settings)
    try:
        record: str | None = await redis.get(health_check_key(settings))
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
        "health_check_key": health_check_key(settings),
    }
    return AppWorker(**(options | overrides))
