"""Keyset (cursor) pagination over time-ordered UUID primary keys.

Rows are listed newest first by `id` (a UUIDv7, unique and creation-ordered). The cursor
is the last id of a page, base64url-encoded and opaque to clients; following
`next_cursor` until it is null visits every row that existed when the walk began exactly
once, whatever is inserted meanwhile.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Generic, TypeVar, TypeVarTuple
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import Row, Select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

T = TypeVar("T")
ModelT = TypeVar("ModelT")
Ts = TypeVarTuple("Ts")


def encode_cursor(position: UUID) -> str:
    return base64.urlsafe_b64encode(position.bytes).rstrip(b"=").decode()


# 16 bytes in unpadded base64url. Every string of this shape is a position (22
# characters carry 132 bits; the last 4 are ignored), so the documented pattern is
# exactly what is accepted.
CURSOR_PATTERN = r"^[A-Za-z0-9_-]{21}[AQgw]$"
_CURSOR = re.compile(CURSOR_PATTERN)


def decode_cursor(cursor: str) -> UUID:
    if not _CURSOR.fullmatch(cursor):
        msg = "malformed cursor; pass back a next_cursor value unchanged"
        raise ValueError(msg)
    return UUID(bytes=base64.urlsafe_b64decode(cursor + "=="))


class PageParams(BaseModel):
    model_config = ConfigDict(frozen=True)

    limit: Annotated[int, Field(ge=1, le=100, description="Page size.")] = 20
    cursor: Annotated[
        str | None,
        Field(pattern=CURSOR_PATTERN, description="The `next_cursor` of the previous page."),
    ] = None

    @field_validator("cursor")
    @classmethod
    def _valid_cursor(cls, value: str | None) -> str | None:
        if value is not None:
            decode_cursor(value)
        return value

    @property
    def after(self) -> UUID | None:
        return decode_cursor(self.cursor) if self.cursor is not None else None


class Page(BaseModel, Generic[T]):
    """One page of a list, as the API returns it."""

    model_config = ConfigDict(from_attributes=True)

    items: list[T]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null at the end."
    )


class Paged(Generic[ModelT]):
    """One page of rows, as services return it (the router's `Page[...]` reads it)."""

    __slots__ = ("items", "next_cursor")

    def __init__(self, items: Sequence[ModelT], next_cursor: str | None) -> None:
        self.items = items
        self.next_cursor = next_cursor


def _windowed(
    statement: Select[*Ts], key: InstrumentedAttribute[UUID], page: PageParams
) -> Select[*Ts]:
    if page.after is not None:
        statement = statement.where(key < page.after)
    return statement.order_by(key.desc()).limit(page.limit + 1)


def _cut(rows: Sequence[Any], page: PageParams, position: Callable[[Any], UUID]) -> Paged[Any]:
    if len(rows) <= page.limit:
        return Paged(rows, None)
    rows = rows[: page.limit]
    return Paged(rows, encode_cursor(position(rows[-1])))


async def paginate(
    session: AsyncSession,
    statement: Select[ModelT],
    *,
    key: InstrumentedAttribute[UUID],
    page: PageParams,
) -> Paged[ModelT]:
    rows = (await session.scalars(_windowed(statement, key, page))).all()
    return _cut(rows, page, lambda row: getattr(row, key.key))


async def paginate_rows(
    session: AsyncSession,
    statement: Select[*Ts],
    *,
    key: InstrumentedAttribute[UUID],
    page: PageParams,
) -> Paged[Row[*Ts]]:
    """`paginate` for a statement of columns, the first of which is `key`."""
    rows = (await session.execute(_windowed(statement, key, page))).all()
    return _cut(rows, page, lambda row: row[0])
