from __future__ import annotations

from sqlalchemy import BigInteger, Column, ForeignKey, Identity, Index, String, Table
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base


class Tag(Base):
    __tablename__ = "tags"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(String(50), unique=True)


item_tags = Table(
    "item_tags",
    Base.metadata,
    Column("item_id", ForeignKey("items.id", ondelete="CASCADE"), primary_key=True),
    Column("tag_id", ForeignKey("tags.id", ondelete="CASCADE"), primary_key=True),
    # The primary key serves item -> tags; this serves the `tag` filter (tag -> items).
    Index("ix_item_tags_tag_id_item_id", "tag_id", "item_id"),
)
