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
from app.worker import FUNCTIONS, HEALTH_CHECK_KEY, create_worker
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


async def test_worker_check_tells_whether_a_worker_is_alive(
    settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    env = {
        "PATH": os.environ["PATH"],
        "DATABASE_URL": settings.database.url,
        "REDIS_URL": settings.redis.url,
    }

    def check() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "app", "worker", "--check"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    worker = create_worker(settings, handle_signals=False, poll_delay=0.01)
    running = asyncio.create_task(worker.main())
    try:
        await wait_until(lambda: redis.exists(HEALTH_CHECK_KEY))
        alive = await asyncio.to_thread(check)
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        await worker.close()
    gone = await asyncio.to_thread(check)
    assert alive.returncode == 0, alive.stderr
    assert "worker healthy: " in alive.stderr
    assert gone.returncode == 1
    assert gone.stderr.strip() == "error: no worker has recorded its health in the last 31 seconds"


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
    assert worker.health_check_key == HEALTH_CHECK_KEY
