"""Personal API keys of machine clients: shown once, stored as a hash.

A key reads `ak_<prefix>_<secret>`. The prefix is not secret: it finds the row and is
shown in lists so people can tell their keys apart. Only a SHA-256 of the secret is
kept: the secret is 32 random bytes, so a fast hash is enough (argon2 is for
low-entropy passwords), and checking a key costs one indexed lookup.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, Timestamps, UUIDPrimaryKey


class ApiKey(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "api_keys"

    user_id: Mapped[UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[list[str]] = mapped_column(ARRAY(String(32)))
    expires_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_api_keys_user_id_id", "user_id", "id"),)
