from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from arq.constants import in_progress_key_prefix
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.config import Settings, WorkerProcessSettings
from app.core.db import session_scope
from app.core.jobs import LEASE_SECONDS, enqueue_after_commit, job, job_info
from app.core.resources import Resources
from app.items.tasks import EXPORT_TIMEOUT
from app.worker import FUNCTIONS, create_worker, health_check_key
from tests.waiting import wait_until


async def test_worker_starts_with_its_own_resources_and_stops_cleanly(
    settings: Settings, redis: Redis
) -> None:
    worker = create_worker(settings, burst=True, handle_signals=False, poll_delay=0.01)
    await worker.main()
    resources = worker.ctx["resources"]
    assert isinstance(resources, Resources)
    await worker.close()
    assert "exit_stack" not in worker.ctx
    assert worker.jobs_failed == 0


async def test_a_job_is_sent_only_after_its_transaction_commits(
    resources: Resources, redis: Redis, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    class RolledBackError(Exception):
        pass

    async def failing_request() -> None:
        async with session_scope(sessionmaker, info=job_info(resources.arq)) as session:
            enqueue_after_commit(session, "auth.send_password_reset", "a@example.com", job_id="rb")
            raise RolledBackError

    with pytest.raises(RolledBackError):
        await failing_request()
    assert await resources.arq.queued_jobs() == []

    async with session_scope(sessionmaker, info=job_info(resources.arq)) as session:
        enqueue_after_commit(session, "auth.send_password_reset", "a@example.com", job_id="ok")
        assert await resources.arq.queued_jobs() == []  # not before the commit
    assert [job.job_id for job in await resources.arq.queued_jobs()] == ["ok"]


def _named(settings: Settings, name: str) -> Settings:
    worker = settings.worker.model_copy(update={"name": name})
    return settings.model_copy(update={"worker": worker})


async def test_worker_check_tells_whether_its_own_worker_is_alive(
    settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    """Two workers: the check of each names only its own. A worker alive must not make
    one that stopped (or froze) look healthy."""
    env = {
        "PATH": os.environ["PATH"],
        "DATABASE_URL": settings.database.url,
        "REDIS_URL": settings.redis.url,
    }

    def check(name: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "app", "worker", "--check"],
            env=env | {"WORKER_NAME": name},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    stopped = create_worker(_named(settings, "worker-a"), handle_signals=False, poll_delay=0.01)
    alive = create_worker(_named(settings, "worker-b"), handle_signals=False, poll_delay=0.01)
    assert stopped.health_check_key != alive.health_check_key
    runs = {w: asyncio.create_task(w.main()) for w in (stopped, alive)}
    try:
        await wait_until(lambda: redis.exists(stopped.health_check_key, alive.health_check_key))
        both = await asyncio.gather(
            *(asyncio.to_thread(check, n) for n in ("worker-a", "worker-b"))
        )
        runs[stopped].cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runs[stopped]
        await stopped.close()
        # What a frozen worker's record does once it lapses (ARQ gives it 31 s).
        await redis.delete(stopped.health_check_key)
        after = await asyncio.gather(
            *(asyncio.to_thread(check, n) for n in ("worker-a", "worker-b"))
        )
    finally:
        for run in runs.values():
            run.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await run
        await alive.close()
    assert [r.returncode for r in both] == [0, 0], [r.stderr for r in both]
    assert all("worker healthy: " in r.stderr for r in both)
    assert [r.returncode for r in after] == [1, 0]
    assert after[0].stderr.strip() == (
        "error: worker 'worker-a' has not recorded its health in the last 31 seconds"
    )
    never = await asyncio.to_thread(check, "worker-c")
    assert never.returncode == 1


async def test_a_running_job_holds_a_short_lease_not_arqs_longest_timeout(
    settings: Settings, resources: Resources, redis: Redis
) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def slow(ctx: dict[str, Any]) -> None:
        started.set()
        await release.wait()

    worker = create_worker(
        settings,
        functions=[*FUNCTIONS, job(slow, name="tests.slow", timeout=5, max_tries=1)],
        cron_jobs=[],
        burst=True,
        handle_signals=False,
        poll_delay=0.01,
    )
    # ARQ's own in-progress timeout: the longest of every function's, plus 10 s.
    assert worker.in_progress_timeout_s == EXPORT_TIMEOUT + 10
    await resources.arq.enqueue_job("tests.slow", _job_id="slow-1")
    running = asyncio.create_task(worker.main())
    try:
        async with asyncio.timeout(10):
            await started.wait()
        ttl_ms = await redis.pttl(in_progress_key_prefix + "slow-1")
        assert 0 < ttl_ms <= LEASE_SECONDS * 1000
        release.set()
        await running
    finally:
        release.set()
        await worker.close()
    assert worker.jobs_complete == 1
    assert not await redis.exists(in_progress_key_prefix + "slow-1")


def test_the_worker_takes_its_knobs_from_settings(settings: Settings) -> None:
    worker_settings = WorkerProcessSettings(
        _env_file=None, max_jobs=3, poll_delay_seconds=0.2, shutdown_grace_seconds=7
    )
    worker = create_worker(
        settings.model_copy(update={"worker": worker_settings}), handle_signals=False
    )
    assert (worker.max_jobs, worker.poll_delay_s, worker._job_completion_wait) == (3, 0.2, 7)
    assert worker.health_check_key == health_check_key(settings)
    assert worker.health_check_key.endswith(f":{settings.worker.name}")
