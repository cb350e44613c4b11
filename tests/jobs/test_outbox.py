"""Jobs reach the queue only after their transaction commits, and never get lost."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from arq import ArqRedis
from redis.asyncio import ConnectionPool
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.db import session_scope, utcnow
from app.core.jobs import enqueue_after_commit, job_info, relay_outbox
from app.core.resources import Resources
from app.models import JobOutbox
from tests.conftest import RunJobs
from tests.factories import create_account

UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"


async def _outbox_rows(db: AsyncSession) -> int:
    return int(await db.scalar(select(func.count()).select_from(JobOutbox)) or 0)


async def test_a_rolled_back_transaction_queues_nothing(
    resources: Resources, sessionmaker: async_sessionmaker[AsyncSession], db: AsyncSession
) -> None:
    class RolledBackError(Exception):
        pass

    async def failing_request() -> None:
        async with session_scope(sessionmaker, info=job_info(resources.arq)) as session:
            enqueue_after_commit(
                session, "auth.send_welcome_email", "00000000-0000-7000-8000-000000000000"
            )
            raise RolledBackError

    await resources.redis.flushdb()
    with pytest.raises(RolledBackError):
        await failing_request()
    assert await resources.arq.queued_jobs() == []
    assert await _outbox_rows(db) == 0


async def test_a_committed_write_runs_its_job_exactly_once(
    client: httpx.AsyncClient, run_jobs: RunJobs, resources: Resources, db: AsyncSession
) -> None:
    await create_account(client)
    assert [job.function for job in await resources.arq.queued_jobs()] == [
        "auth.send_welcome_email"
    ]
    assert await _outbox_rows(db) == 0  # sent, so no longer waiting
    assert await run_jobs() == 1
    assert await run_jobs() == 0


async def test_jobs_survive_redis_being_down_at_commit(
    resources: Resources,
    sessionmaker: async_sessionmaker[AsyncSession],
    db: AsyncSession,
    run_jobs: RunJobs,
) -> None:
    await resources.redis.flushdb()
    broken = ArqRedis(ConnectionPool.from_url(UNREACHABLE_REDIS, socket_connect_timeout=1))
    try:
        async with session_scope(sessionmaker, info=job_info(broken)) as session:
            job_id = enqueue_after_commit(
                session, "auth.send_welcome_email", "00000000-0000-7000-8000-000000000000"
            )
    finally:
        await broken.aclose(close_connection_pool=True)
    assert await _outbox_rows(db) == 1  # the commit kept the job

    # The relay leaves fresh rows to their request; age this one past the grace period.
    await db.execute(update(JobOutbox).values(created_at=utcnow() - timedelta(minutes=5)))
    await db.commit()
    async with session_scope(sessionmaker) as session:
        assert await relay_outbox(session, resources.arq) == 1
    async with session_scope(sessionmaker) as session:
        assert await relay_outbox(session, resources.arq) == 0
    assert [job.job_id for job in await resources.arq.queued_jobs()] == [job_id]
    assert await _outbox_rows(db) == 0
    assert await run_jobs() == 1


async def test_a_job_sent_twice_runs_once(
    resources: Resources,
    sessionmaker: async_sessionmaker[AsyncSession],
    run_jobs: RunJobs,
) -> None:
    await resources.redis.flushdb()
    for _ in range(2):
        async with session_scope(sessionmaker, info=job_info(resources.arq)) as session:
            enqueue_after_commit(
                session,
                "auth.send_welcome_email",
                "00000000-0000-7000-8000-000000000000",
                job_id="welcome:same",
            )
    assert len(await resources.arq.queued_jobs()) == 1
    assert await run_jobs() == 1


def test_jobs_take_plain_values_only(
    resources: Resources, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    session = sessionmaker(info=job_info(resources.arq))
    with pytest.raises(TypeError):
        enqueue_after_commit(session, "auth.send_welcome_email", object())
