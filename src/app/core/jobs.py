"""Background jobs: enqueued after the commit through an outbox, run with logging.

A job belongs to a write. `enqueue_after_commit` stores it in `job_outbox` inside the
write's transaction and, once that transaction committed, sends it to ARQ and deletes the
row. A rollback drops both. If Redis is down at that moment the row stays, and the
worker's `relay_outbox` cron sends it later: nothing committed loses its job. Every job
has an ARQ job id, so a second send of the same row is ignored by ARQ.

Jobs take ids and plain JSON values, never ORM objects, open their own session scope,
and must be idempotent: ARQ runs a job again after a worker crash.

A crashed worker's jobs come back quickly. ARQ marks a running job with an in-progress
key whose lifetime is the longest timeout of *any* function plus 10 s (610 s here, for
the export), so a worker killed during a 30 s email would hold that email back for ten
minutes. Each run instead holds the key as a short lease that it renews while it runs:
after a crash the key lapses within `LEASE_SECONDS` and another worker picks the job up.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, cast

from arq import ArqRedis, Retry
from arq.constants import in_progress_key_prefix
from arq.cron import CronJob, cron
from arq.worker import Function, func
from redis.exceptions import RedisError
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import job_metrics
from app.core.context import request_id_var
from app.core.db import after_commit_batch, utcnow
from app.core.ids import uuid7
from app.core.retry import is_transient
from app.models import JobOutbox

if TYPE_CHECKING:
    from arq.typing import WorkerCoroutine

logger = logging.getLogger(__name__)

ARQ_INFO_KEY = "arq"
_PENDING_KEY = "pending_jobs"
# The relay leaves younger rows to the request that wrote them.
RELAY_GRACE = timedelta(seconds=30)
RELAY_BATCH = 500
# A running job's in-progress key lives this long unless renewed, every LEASE_RENEW_SECONDS.
LEASE_SECONDS = 10
LEASE_RENEW_SECONDS = 3

JobFunction = Callable[..., Awaitable[Any]]


def job_info(arq: ArqRedis) -> dict[str, object]:
    """`session_scope(..., info=job_info(arq))`: lets the session enqueue jobs."""
    return {ARQ_INFO_KEY: arq}


def enqueue_after_commit(
    session: AsyncSession, function: str, *args: Any, job_id: str | None = None
) -> str:
    """Queue `function(*args)` to run once this session's transaction commits.

    `job_id` de-duplicates: while a job with that id is queued, running or its result is
    kept, another one with the same id is not queued. Returns the job id.
    """
    arq = session.info.get(ARQ_INFO_KEY)
    if not isinstance(arq, ArqRedis):
        msg = "this session was not opened with session_scope(..., info=job_info(arq))"
        raise TypeError(msg)
    json.dumps(args)  # jobs take plain values; fail here, not in the worker
    entry = JobOutbox(function=function, args=list(args), job_id=job_id or f"{function}:{uuid7()}")
    session.add(entry)
    after_commit_batch(session, _PENDING_KEY, entry, functools.partial(_dispatch, session, arq))
    return entry.job_id


async def _dispatch(session: AsyncSession, arq: ArqRedis, entries: list[JobOutbox]) -> None:
    try:
        sent = await send_to_queue(arq, entries)
        if sent:
            await session.execute(delete(JobOutbox).where(JobOutbox.id.in_(sent)))
            await session.commit()
    except Exception:
        # The write is committed and so are its jobs: the relay sends what is left.
        logger.exception("jobs stay in the outbox for the relay")


async def send_to_queue(arq: ArqRedis, entries: Sequence[JobOutbox]) -> list[Any]:
    """Send outbox rows to ARQ; the ids of the rows that reached it."""
    sent = []
    for entry in entries:
        try:
            job = await arq.enqueue_job(entry.function, *entry.args, _job_id=entry.job_id)
        except (RedisError, OSError) as exc:
            logger.warning("job %s not queued (%s); left in the outbox", entry.job_id, exc)
            break
        logger.info(
            "job %s %s", entry.job_id, "queued" if job is not None else "was already queued"
        )
        sent.append(entry.id)
    return sent


async def relay_outbox(session: AsyncSession, arq: ArqRedis) -> int:
    """Send the outbox rows their requests could not send; how many were sent."""
    statement = (
        select(JobOutbox)
        .where(JobOutbox.created_at < utcnow() - RELAY_GRACE)
        .order_by(JobOutbox.created_at)
        .limit(RELAY_BATCH)
        .with_for_update(skip_locked=True)
    )
    entries = (await session.scalars(statement)).all()
    sent = await send_to_queue(arq, entries)
    if sent:
        await session.execute(delete(JobOutbox).where(JobOutbox.id.in_(sent)))
    return len(sent)


async def _renew_lease(redis: ArqRedis, job_id: str) -> None:
    try:
        # PEXPIRE never re-creates the key once ARQ has finished and deleted it.
        await redis.pexpire(in_progress_key_prefix + job_id, LEASE_SECONDS * 1000)
    except (RedisError, OSError) as exc:
        logger.warning("could not renew the lease of job %s: %s", job_id, exc)


async def _hold_lease(redis: ArqRedis, job_id: str) -> None:
    """Keep the job's in-progress key alive in short leases while the job runs."""
    while True:
        await asyncio.sleep(LEASE_RENEW_SECONDS)
        await _renew_lease(redis, job_id)


@contextlib.asynccontextmanager
async def _leased(ctx: dict[str, Any], job_id: str) -> AsyncIterator[None]:
    redis = ctx.get("redis")
    if not isinstance(redis, ArqRedis):  # called directly, not by a worker
        yield
        return
    # The short lease replaces ARQ's long one before the job body runs, so a crash at
    # any point of the run holds the job back for LEASE_SECONDS at most.
    await _renew_lease(redis, job_id)
    lease = asyncio.create_task(_hold_lease(redis, job_id))
    try:
        yield
    finally:
        lease.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await lease


_counting: set[asyncio.Task[None]] = set()


def _count(ctx: dict[str, Any], name: str, outcome: str, seconds: float) -> None:
    """Add the run to the job metrics, without making the job wait for Redis."""
    redis = ctx.get("redis")
    if isinstance(redis, ArqRedis):
        task = asyncio.create_task(job_metrics.record(redis, name, outcome, seconds))
        _counting.add(task)
        task.add_done_callback(_counting.discard)


def _logged(name: str, function: JobFunction) -> JobFunction:
    """Log start, end, duration and outcome of every run, with the job id on each line;
    hold the run's in-progress lease."""

    @functools.wraps(function)
    async def run(ctx: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        job_id, attempt = ctx.get("job_id", "-"), ctx.get("job_try", 1)
        token = request_id_var.set(job_id)
        started = time.perf_counter()
        logger.info("job start %s id=%s try=%s", name, job_id, attempt)
        outcome = "failed"
        try:
            async with _leased(ctx, job_id):
                result = await function(ctx, *args, **kwargs)
            outcome = "complete"
            return result
        except Retry:
            outcome = "retry"
            raise
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        except Exception as exc:
            if not is_transient(exc):
                raise
            # The database rolled the job's transaction back (a deadlock, a serialization
            # failure): run it again soon, within the job's tries.
            outcome = "retry"
            raise transient_retry(attempt) from exc
        finally:
            elapsed = time.perf_counter() - started
            elapsed_ms = elapsed * 1000
            _count(ctx, name, outcome, elapsed)
            log = logger.error if outcome == "failed" else logger.info
            log(
                "job end %s id=%s try=%s outcome=%s duration_ms=%.1f",
                name,
                job_id,
                attempt,
                outcome,
                elapsed_ms,
                exc_info=outcome == "failed",
            )
            request_id_var.reset(token)

    return run


def job(function: JobFunction, *, name: str, timeout: int, max_tries: int) -> Function:
    """An ARQ function named `<domain>.<verb>` with its own timeout and tries."""
    coroutine = cast("WorkerCoroutine", _logged(name, function))
    return func(coroutine, name=name, timeout=timeout, max_tries=max_tries)


def cron_job(function: JobFunction, *, name: str, timeout: int, **schedule: Any) -> CronJob:
    """A periodic job. ARQ gives each tick one job id, so several workers run it once."""
    coroutine = cast("WorkerCoroutine", _logged(name, function))
    return cron(coroutine, name=name, timeout=timeout, unique=True, **schedule)


def retry_backoff(attempt: int, base_seconds: float) -> Retry:
    """Retry after base, 2 x base, 4 x base... seconds (attempt 1 is the first try)."""
    return Retry(defer=base_seconds * 2 ** (attempt - 1))


TRANSIENT_RETRY_BASE_SECONDS = 0.5
TRANSIENT_RETRY_MAX_SECONDS = 30.0


def transient_retry(attempt: int) -> Retry:
    """After a transient database error: 0.5, 1, 2... seconds (at most 30), each scaled
    by a random factor between 0.5 and 1.5, so jobs that collided do not collide again."""
    delay = min(TRANSIENT_RETRY_MAX_SECONDS, TRANSIENT_RETRY_BASE_SECONDS * 2 ** (attempt - 1))
    return Retry(defer=delay * random.uniform(0.5, 1.5))  # noqa: S311 (not a secret)
