from __future__ import annotations

import os
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from arq import create_pool
from redis.asyncio import Redis
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth.tasks import purge_expired_tokens
from app.core.config import Settings
from app.core.db import utcnow
from app.core.resources import Resources, arq_redis_settings
from app.core.storage import LocalStorage
from app.jobs import tasks as jobs_tasks
from app.models import PasswordResetToken, RefreshToken
from app.worker import create_worker
from tests.factories import create_account


async def _count(db: AsyncSession, model: type[RefreshToken | PasswordResetToken]) -> int:
    return int(await db.scalar(select(func.count()).select_from(model)) or 0)


async def test_purge_removes_only_unusable_tokens(
    client: httpx.AsyncClient,
    db: AsyncSession,
    resources: Resources,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    expired = await create_account(client)
    await create_account(client)  # its refresh token stays valid
    await db.execute(
        update(RefreshToken)
        .where(RefreshToken.user_id == expired.id)
        .values(expires_at=utcnow() - timedelta(seconds=1))
    )
    for token_hash, expires_in in (("a" * 64, -1), ("b" * 64, 30)):
        db.add(
            PasswordResetToken(
                user_id=expired.id,
                token_hash=token_hash,
                expires_at=utcnow() + timedelta(minutes=expires_in),
            )
        )
    await db.commit()

    ctx = {"resources": replace(resources, sessionmaker=sessionmaker), "job_id": "t", "job_try": 1}
    assert await purge_expired_tokens(ctx) == {"refresh_tokens": 1, "reset_tokens": 1}
    assert await _count(db, RefreshToken) == 1
    assert await _count(db, PasswordResetToken) == 1


async def test_a_cron_tick_is_queued_once_by_several_workers(
    settings: Settings, redis: Redis
) -> None:
    pools = [await create_pool(arq_redis_settings(settings)) for _ in range(3)]
    workers = [create_worker(settings, handle_signals=False, redis_pool=pool) for pool in pools]
    tick = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=30)
    try:
        for worker in workers:
            for job in worker.cron_jobs:
                job.next_run = tick
            await worker.run_cron(tick - timedelta(seconds=0.5), delay=0.5)
        queued = await pools[0].queued_jobs()
    finally:
        for worker in workers:
            await worker.close()
    names = sorted(job.function for job in queued)
    assert names == sorted(job.name for job in workers[0].cron_jobs)
    assert len(names) == 3


async def test_purge_removes_files_left_by_killed_writers(
    resources: Resources,
    sessionmaker: async_sessionmaker[AsyncSession],
    tmp_path: Path,
) -> None:
    storage = LocalStorage(tmp_path)
    exports = tmp_path / "exports"
    exports.mkdir()
    stale, fresh, final = (
        exports / ".a.csv.0190.part",
        exports / ".b.csv.0191.part",
        exports / "c.csv",
    )
    for path in (stale, fresh, final):
        path.write_text("x")
    hours_ago = time.time() - 2 * 3600
    os.utime(stale, (hours_ago, hours_ago))
    os.utime(final, (hours_ago, hours_ago))

    ctx = {
        "resources": replace(resources, sessionmaker=sessionmaker, storage=storage),
        "job_id": "t",
        "job_try": 1,
    }
    result = await jobs_tasks.purge(ctx)
    assert result["partials"] == 1
    assert (stale.exists(), fresh.exists(), final.exists()) == (False, True, True)
