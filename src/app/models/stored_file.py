"""Files users uploaded: metadata here, bytes in storage under a generated key."""

from __future__ import annotations

from uuid import UUID

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, Timestamps, UUIDPrimaryKey


class StoredFile(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "files"

    owner_id: Mapped[UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    # Where the bytes are; made by the service, never by the client.
    storage_key: Mapped[str] = mapped_column(String(255), unique=True)
    # The client's name for it, sanitised; metadata only, never a path.
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(100))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    description: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        CheckConstraint("size >= 0", name="size_non_negative"),
        Index("ix_files_owner_id_id", "owner_id", "id"),
    )
