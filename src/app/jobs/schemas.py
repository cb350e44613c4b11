from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, Field

from app.models import JobStatus


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
