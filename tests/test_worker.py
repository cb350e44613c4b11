from __future__ import annotations

import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.config import Settings
from app.core.db import session_scope
from app.core.jobs import enqueue_after_commit, job_info
from app.core.resources import Resources
from app.worker import create_worker


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
