"""User-visible jobs: created by a request, advanced by the worker, read by the owner."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.actor import Actor
from app.core.db import after_commit, utcnow
from app.core.errors import Conflict, NotFound
from app.core.events import publish_after_commit
from app.core.jobs import enqueue_after_commit
from app.core.pagination import Paged, PageParams
from app.core.storage import Storage
from app.jobs import repository
from app.jobs.schemas import JobRead
from app.models import Job, JobStatus
from app.realtime.schemas import EventType

# A job still in progress this long after it started has died with its worker for good.
STALLED_AFTER = timedelta(hours=1)


async def submit(session: AsyncSession, owner: Actor, *, kind: str, function: str) -> Job:
    """Record a job for `owner` and queue `function(job_id)` once this transaction commits."""
    job = Job(owner_id=owner.id, kind=kind)
    await repository.add(session, job)
    enqueue_after_commit(session, function, str(job.id), job_id=f"{function}:{job.id}")
    return job


async def get(session: AsyncSession, actor: Actor, job_id: UUID) -> Job:
    job = await repository.get(session, job_id)
    if job is None or (job.owner_id != actor.id and not actor.sees_everything):
        raise NotFound("Job not found")
    return job


async def list_page(session: AsyncSession, actor: Actor, *, page: PageParams) -> Paged[Job]:
    return await repository.page(session, owner_id=actor.id, page=page)


async def file_of(
    session: AsyncSession, actor: Actor, job_id: UUID, *, storage: Storage
) -> tuple[Job, Path]:
    job = await get(session, actor, job_id)
    if job.status != JobStatus.complete or job.file_key is None:
        raise Conflict(f"This job has no file to download (it is {job.status.value})")
    if not await storage.exists(job.file_key):
        raise NotFound("This job's file is no longer available")
    return job, storage.local_path(job.file_key)


async def start(session: AsyncSession, job_id: UUID) -> Job | None:
    """Mark the job in progress; None when it is gone or already finished (a rerun)."""
    job = await repository.get_for_update(session, job_id)
    if job is None or job.status in (JobStatus.complete, JobStatus.failed):
        return None
    job.status = JobStatus.in_progress
    job.started_at = job.started_at or utcnow()
    return job


async def complete(
    session: AsyncSession,
    job_id: UUID,
    *,
    result: dict[str, Any],
    file_key: str | None,
    base_url: str,
) -> None:
    job = await repository.get_for_update(session, job_id)
    if job is None:
        return
    job.status, job.finished_at = JobStatus.complete, utcnow()
    job.result, job.file_key, job.error = result, file_key, None
    _announce(session, job, EventType.job_completed, base_url=base_url)


async def fail(session: AsyncSession, job_id: UUID, *, error: str, base_url: str) -> None:
    job = await repository.get_for_update(session, job_id)
    if job is None or job.status in (JobStatus.complete, JobStatus.failed):
        return
    job.status, job.finished_at, job.error = JobStatus.failed, utcnow(), error
    _announce(session, job, EventType.job_failed, base_url=base_url)


def _announce(session: AsyncSession, job: Job, event: EventType, *, base_url: str) -> None:
    publish_after_commit(session, job.owner_id, event, JobRead.of(job, base_url=base_url))


async def purge(
    session: AsyncSession, *, storage: Storage, retention: timedelta
) -> tuple[int, int]:
    """Delete finished jobs older than `retention` with their files, and fail stalled
    ones; the two counts."""
    now = utcnow()
    expired = await repository.finished_before(session, now - retention)
    keys = [job.file_key for job in expired if job.file_key]
    for job in expired:
        await session.delete(job)

    async def delete_files() -> None:  # only once no row points at them any more
        for key in keys:
            await storage.delete(key)

    after_commit(session, delete_files)
    stalled = await repository.fail_stalled(session, started_before=now - STALLED_AFTER, now=now)
    return len(expired), stalled
