"""The CSV export of a user's items, streamed from the database to storage."""

from __future__ import annotations

import csv
import io
from decimal import Decimal
from typing import Any
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.storage import Sink
from app.items import repository

# Spreadsheets run a cell that starts with one of these as a formula (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return f"{value:.2f}"
    text = value.isoformat() if hasattr(value, "isoformat") else str(value)
    return f"'{text}" if isinstance(value, str) and text.startswith(_FORMULA_START) else text


async def write_csv(session: AsyncSession, *, owner_id: UUID, sink: Sink) -> dict[str, int]:
    """Write every item of `owner_id` to `sink`; the number of rows and bytes."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(repository.EXPORT_COLUMNS)
    rows = written = 0
    async for batch in repository.export_rows(session, owner_id=owner_id):
        writer.writerows([_cell(value) for value in row] for row in batch)
        rows += len(batch)
        written += await _flush(buffer, sink)
    written += await _flush(buffer, sink)
    return {"rows": rows, "bytes": written}


async def _flush(buffer: io.StringIO, sink: Sink) -> int:
    data = buffer.getvalue().encode()
    buffer.seek(0)
    buffer.truncate()
    if data:
        await sink.write(data)
    return len(data)
