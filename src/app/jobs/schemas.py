from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, Field

from app.core.http import API_PREFIX
from app.models import Job, JobStatus


class JobAccepted(BaseModel):
    job_id: UUID
    status_url: str


class JobRead(BaseModel):
    id: UUID
    kind: str
    status: JobStatus
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    result: dict[str, Any] | None = Field(description="What the job produced, once complete.")
    error: str | None = Field(description="Why the job failed, when it did.")
    download_url: str | None = Field(description="Where to fetch the file, once complete.")

    @classmethod
    def of(cls, job: Job, *, base_url: str) -> JobRead:
        """`base_url`: the request's, or PUBLIC_BASE_URL outside a request (the worker)."""
        download = None
        if job.status == JobStatus.complete and job.file_key:
            download = f"{base_url.rstrip('/')}{API_PREFIX}/jobs/{job.id}/download"
        return cls(
            id=job.id,
            kind=job.kind,
            status=job.status,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            result=job.result,
            error=job.error,
            download_url=download,
        )
