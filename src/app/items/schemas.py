from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Self
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from app.core.schemas import PartialUpdate, example_config
from app.files.schemas import FileRead
from app.models import ItemStatus

MAX_TAGS = 20

Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Description = Annotated[str, Field(max_length=10_000)]
CENT = Decimal("0.01")


def _to_cents(value: Decimal) -> Decimal:
    return value.quantize(CENT)


# Stored as NUMERIC(12, 2); normalised to two places so every response shows "12.50".
Price = Annotated[Decimal, Field(ge=0, max_digits=12, decimal_places=2), AfterValidator(_to_cents)]
TagName = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True,
        to_lower=True,
        min_length=1,
        max_length=50,
        pattern=r"^[\w][\w .+#-]*$",
    ),
]


def _unique(tags: list[str]) -> list[str]:
    return sorted(set(tags))


Tags = Annotated[list[TagName], Field(max_length=MAX_TAGS), AfterValidator(_unique)]


def _tag_names(value: object) -> object:
    if isinstance(value, list):
        return [getattr(tag, "name", tag) for tag in value]
    return value


class ItemCreate(BaseModel):
    model_config = example_config(
        {
            "title": "Red lamp",
            "description": "Brass, from the seventies; works.",
            "price": "12.50",
            "status": "active",
            "tags": ["home", "vintage"],
        }
    )

    title: Title
    description: Description | None = None
    price: Price
    status: ItemStatus = ItemStatus.draft
    tags: Tags = Field(default_factory=list)


class ItemReplace(ItemCreate):
    """A full replacement (PUT): omitted optional fields return to their defaults."""


class ItemUpdate(PartialUpdate):
    """A partial update (PATCH): only the fields sent change; a null description clears it."""

    nullable = frozenset({"description"})
    model_config = example_config({"price": "9.99"}, {"status": "archived", "description": None})

    title: Title | None = None
    description: Description | None = None
    price: Price | None = None
    status: ItemStatus | None = None
    tags: Tags | None = None


class ItemRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: UUID
    title: str
    description: str | None
    price: Decimal
    status: ItemStatus
    tags: Annotated[list[str], BeforeValidator(_tag_names)]
    attachments: list[FileRead] = Field(description="Attached files, oldest first.")
    owner_id: UUID
    created_at: datetime
    updated_at: datetime
    version: int


class ItemFilters(BaseModel):
    q: Annotated[
        str | None, Field(min_length=1, max_length=200, description="Full-text search.")
    ] = None
    status: ItemStatus | None = None
    tag: Annotated[
        list[TagName],
        Field(max_length=MAX_TAGS, description="Only items carrying every one of these tags."),
    ] = []
    min_price: Price | None = None
    max_price: Price | None = None

    @model_validator(mode="after")
    def _price_range(self) -> Self:
        if (
            self.min_price is not None
            and self.max_price is not None
            and self.min_price > self.max_price
        ):
            msg = "min_price cannot be greater than max_price"
            raise ValueError(msg)
        return self
