from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.config import Settings
from app.core.db import session_scope
from app.core.jobs import enqueue_after_commit, job_info
from app.core.resources import Resources
from app.worker import HEALTH_CHECK_KEY, create_worker
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
