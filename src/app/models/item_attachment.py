"""Which files are attached to which items (both belong to the same user)."""

from __future__ import annotations

from sqlalchemy import Column, DateTime, ForeignKey, Index, Table, func

from app.core.db import Base

item_attachments = Table(
    "item_attachments",
    Base.metadata,
    Column("item_id", ForeignKey("items.id", ondelete="CASCADE"), primary_key=True),
    Column("file_id", ForeignKey("files.id", ondelete="CASCADE"), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # The primary key serves item -> files; this serves "which items show this file".
    Index("ix_item_attachments_file_id", "file_id"),
)
