"""Every query on user-visible jobs."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.pagination import Paged, PageParams, paginate
from app.models import Job, JobStatus


async def get(session: AsyncSession, job_id: UUID) -> Job | None:
    return await session.get(Job, job_id)


async def get_for_update(session: AsyncSession, job_id: UUID) -> Job | None:
    return await session.scalar(select(Job).where(Job.id == job_id).with_for_update())


async def file_keys_of(session: AsyncSession, owner_id: UUID) -> list[str]:
    statement = select(Job.file_key).where(Job.owner_id == owner_id, Job.file_key.is_not(None))
    return [key for key in await session.scalars(statement) if key is not None]


async def add(session: AsyncSession, job: Job) -> None:
    session.add(job)
    await session.flush()


async def page(session: AsyncSession, *, owner_id: UUID, page: PageParams) -> Paged[Job]:
    return await paginate(
        session, select(Job).where(Job.owner_id == owner_id), key=Job.id, page=page
    )


async def finished_before(session: AsyncSession, moment: datetime) -> Sequence[Job]:
    statement = select(Job).where(
        Job.status.in_([JobStatus.complete, JobStatus.failed]), Job.finished_at < moment
    )
    return (await session.scalars(statement)).all()


async def fail_stalled(session: AsyncSession, *, started_before: datetime, now: datetime) -> int:
    result = await session.execute(
        update(Job)
        .where(Job.status == JobStatus.in_progress, Job.started_at < started_before)
        .values(status=JobStatus.failed, finished_at=now, error="The job did not finish in time")
    )
    return result.rowcount  # type: ignore[attr-defined, no-any-return]
