"""Jobs waiting to reach the queue: the transactional outbox.

A job is written here in the same transaction as the change that asked for it, so it
exists exactly when that change committed. Right after the commit it is sent to ARQ and
the row deleted; if Redis was unreachable at that moment, the worker's relay cron sends
it later. Nothing committed loses its job, and ARQ's job id keeps a resend from running
twice.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import String, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, UUIDPrimaryKey, utcnow


class JobOutbox(UUIDPrimaryKey, Base):
    __tablename__ = "job_outbox"

    function: Mapped[str] = mapped_column(String(100))
    args: Mapped[list[Any]] = mapped_column(JSONB)
    job_id: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(
        default=utcnow, server_default=func.now(), index=True
    )
