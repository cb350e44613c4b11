from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse

from app.auth.dependencies import JobsReader
from app.core.dependencies import ResourcesDep, SessionDep
from app.core.errors import problem_responses
from app.core.http import NO_STORE
from app.core.pagination import Page, PageParams
from app.jobs import service as job_service
from app.jobs.schemas import JobRead
from app.models import Job

# A job's status changes while clients poll it: never kept.
router = APIRouter(
    prefix="/jobs", tags=["jobs"], dependencies=[NO_STORE], responses=problem_responses(401)
)


def job_read(request: Request, job: Job) -> JobRead:
    return JobRead.of(job, base_url=str(request.base_url))


@router.get("", response_model=Page[JobRead])
async def list_jobs(
    user: JobsReader,
    session: SessionDep,
    request: Request,
    page: Annotated[PageParams, Query()],
) -> Page[JobRead]:
    """Your jobs, newest first."""
    jobs = await job_service.list_page(session, user, page=page)
    return Page(items=[job_read(request, job) for job in jobs.items], next_cursor=jobs.next_cursor)


@router.get("/{job_id:uuid}", responses=problem_responses(404))
async def read_job(
    job_id: UUID, user: JobsReader, session: SessionDep, request: Request
) -> JobRead:
    """A job's status: `queued`, `in_progress`, `complete` (with `download_url` when it
    produced a file) or `failed`. Another user's job answers 404."""
    return job_read(request, await job_service.get(session, user, job_id))


@router.get(
    "/{job_id:uuid}/download",
    response_class=FileResponse,
    responses={
        200: {"content": {"text/csv": {}}, "description": "The file"},
        **problem_responses(404, 409),
    },
)
async def download_job_file(
    job_id: UUID, user: JobsReader, session: SessionDep, resources: ResourcesDep
) -> FileResponse:
    """The file a complete job produced (409 while it is not complete)."""
    job, path = await job_service.file_of(session, user, job_id, storage=resources.storage)
    filename = f"{job.kind.replace('.', '-')}-{job.created_at:%Y%m%d-%H%M%S}.csv"
    return FileResponse(
        path,
        media_type="text/csv",
        filename=filename,
        headers={"Cache-Control": "private, no-store"},
    )
