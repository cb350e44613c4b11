from __future__ import annotations

import math
import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
)

from app.core.schemas import NO_NUL, PartialUpdate, example_config
from app.files.schemas import FileRead
from app.models import ItemStatus

MAX_TAGS = 20


def _stripped(value: str) -> str:
    if not (value := value.strip()):
        msg = "cannot be blank"
        raise ValueError(msg)
    return value


def _tag_name(value: str) -> str:
    return value.strip().lower()


# Lengths and patterns apply to the text as sent (so the documented schema is exact);
# surrounding whitespace is dropped afterwards.
Title = Annotated[
    str,
    Field(min_length=1, max_length=200, pattern=r"^[^\x00]*[^\s\x00][^\x00]*$"),
    AfterValidator(_stripped),
]
Description = Annotated[str, Field(max_length=10_000, pattern=NO_NUL)]
CENT = Decimal("0.01")


def _to_cents(value: Decimal) -> Decimal:
    return value.quantize(CENT)


# Stored as NUMERIC(12, 2); normalised to two places so every response shows "12.50".
# The JSON Schema says exactly what is accepted: a string of digits with at most two
# decimals, or a JSON number that is a whole number of cents.
MAX_PRICE = Decimal("9999999999.99")
PRICE_PATTERN = r"^(0|[1-9][0-9]{0,9})(\.[0-9]{1,2})?$"
_PRICE_TEXT = re.compile(PRICE_PATTERN)
_PRICE_STRING_SCHEMA = {"type": "string", "pattern": PRICE_PATTERN, "examples": ["12.50"]}


def _price_input(value: object) -> object:
    """Strings must be plain decimals ("12.50", not "1E1" or " 12"). A JSON number
    arrives as a binary float: 0.35 may be 0.35000000000000003, so a number within a
    millionth of a cent is that many cents, and anything else is refused."""
    if isinstance(value, str) and not _PRICE_TEXT.fullmatch(value):
        msg = "a price is a decimal with at most two places, such as 12.50"
        raise ValueError(msg)
    if isinstance(value, float) and math.isfinite(value) and abs(value) <= MAX_PRICE:
        cents = round(value * 100)
        if abs(value * 100 - cents) > 1e-6:
            msg = "a price has at most two decimal places"
            raise ValueError(msg)
        return Decimal(cents) / 100
    return value  # out of range, NaN or infinite floats are refused by the bounds


_PRICE_RULES = (
    BeforeValidator(_price_input),
    Field(ge=0, le=MAX_PRICE, max_digits=12, decimal_places=2),
    AfterValidator(_to_cents),
)
Price = Annotated[
    Decimal,
    *_PRICE_RULES,
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0, "maximum": MAX_PRICE, "multipleOf": 0.01},
                _PRICE_STRING_SCHEMA,
            ]
        }
    ),
]
# In a query string every value is text.
QueryPrice = Annotated[Decimal, *_PRICE_RULES, WithJsonSchema(_PRICE_STRING_SCHEMA)]
TagName = Annotated[
    str, Field(min_length=1, max_length=50, pattern=r"^[\w][\w .+#-]*$"), AfterValidator(_tag_name)
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
        str | None,
        Field(min_length=1, max_length=200, pattern=NO_NUL, description="Full-text search."),
    ] = None
    status: ItemStatus | None = None
    tag: Annotated[
        list[TagName],
        Field(max_length=MAX_TAGS, description="Only items carrying every one of these tags."),
    ] = []
    # Both bounds are inclusive; a minimum above the maximum matches nothing.
    min_price: QueryPrice | None = None
    max_price: QueryPrice | None = None
