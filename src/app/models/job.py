"""Jobs a user started and can follow (`GET /api/v1/jobs/{id}`), such as item exports."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from sqlalchemy import Enum, ForeignKey, Index, String, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, Timestamps, UUIDPrimaryKey


class JobStatus(StrEnum):
    queued = "queued"
    in_progress = "in_progress"
    complete = "complete"
    failed = "failed"


class Job(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "jobs"

    owner_id: Mapped[UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(50))
    status: Mapped[JobStatus] = mapped_column(
        Enum(JobStatus, name="job_status", native_enum=False, create_constraint=True, length=16),
        default=JobStatus.queued,
        server_default=JobStatus.queued.value,
    )
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # What the job produced (for an export: rows, bytes); shown to the owner.
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # The stored file, for jobs that produce one; never shown.
    file_key: Mapped[str | None] = mapped_column(String(255))
    # A message safe to show to the owner when the job failed.
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_jobs_owner_id_id", "owner_id", "id"),)
