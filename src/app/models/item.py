from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from uuid import UUID

from sqlalchemy import CheckConstraint, Computed, Enum, ForeignKey, Index, Numeric, String, Text
from sqlalchemy.dialects.postgresql import TSVECTOR
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.core.db import Base, Timestamps, UUIDPrimaryKey
from app.models.item_attachment import item_attachments
from app.models.stored_file import StoredFile
from app.models.tag import Tag, item_tags

SEARCH_CONFIG = "english"


class ItemStatus(StrEnum):
    draft = "draft"
    active = "active"
    archived = "archived"


class Item(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "items"

    owner_id: Mapped[UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    price: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    status: Mapped[ItemStatus] = mapped_column(
        Enum(ItemStatus, name="status", native_enum=False, create_constraint=True, length=16),
        default=ItemStatus.draft,
        server_default=ItemStatus.draft.value,
    )
    # Optimistic concurrency: every UPDATE says `WHERE version = <the version read>`,
    # so two writers that read the same version cannot both win.
    version: Mapped[int] = mapped_column(server_default="1")
    # Maintained by PostgreSQL; only ever used in WHERE clauses, never loaded.
    search: Mapped[str] = mapped_column(
        TSVECTOR,
        Computed(
            f"setweight(to_tsvector('{SEARCH_CONFIG}', coalesce(title, '')), 'A') || "
            f"setweight(to_tsvector('{SEARCH_CONFIG}', coalesce(description, '')), 'B')",
            persisted=True,
        ),
        deferred=True,
        deferred_raiseload=True,
    )

    tags: Mapped[list[Tag]] = relationship(secondary=item_tags, lazy="raise", order_by=Tag.name)
    # In the order they were attached.
    attachments: Mapped[list[StoredFile]] = relationship(
        secondary=item_attachments,
        lazy="raise",
        order_by=(item_attachments.c.created_at, item_attachments.c.file_id),
    )

    __table_args__ = (
        CheckConstraint("price >= 0", name="price_non_negative"),
        Index("ix_items_owner_id_id", "owner_id", "id"),
        Index("ix_items_search", "search", postgresql_using="gin"),
    )
    __mapper_args__ = {"version_id_col": version}
