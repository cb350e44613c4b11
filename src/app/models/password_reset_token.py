"""Single-use password-reset tokens, kept in PostgreSQL.

The reset must mark the token used in the same transaction that changes the password,
so the two can never disagree. The token is random (`secrets.token_urlsafe`) and only
its SHA-256 is stored; `job_id` names the mail job that issued it, so a job that runs
again replaces its own token rather than adding another.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from sqlalchemy import ForeignKey, String, func
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, UUIDPrimaryKey, utcnow


class PasswordResetToken(UUIDPrimaryKey, Base):
    __tablename__ = "password_reset_tokens"

    user_id: Mapped[UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    job_id: Mapped[str | None] = mapped_column(String(120), unique=True)
    expires_at: Mapped[datetime]
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())
    used_at: Mapped[datetime | None]
