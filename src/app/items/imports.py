"""Items from a CSV file: the counterpart of the export, for small batches.

The file is a form upload (FastAPI's `UploadFile`; the whole request stays under
MAX_BODY_BYTES, so it is spooled in memory) with a header row naming the columns:
`title` and `price` are required, `description`, `status` and `tags` (`;`-separated)
optional, so an export's own columns are accepted and the ones that are not the
item's to set (`id`, `created_at`...) are ignored. Every row is validated as an
`ItemCreate`; the import answers 422 listing the bad rows, or, with
`on_invalid=skip`, creates the good rows and reports the others.
"""

from __future__ import annotations

import codecs
import csv
import io
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import UploadFile
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.core.errors import UnprocessableContent, problem_responses
from app.items.schemas import ItemCreate
from app.models import ItemStatus

MAX_ROWS = 1000
COLUMNS = ("title", "description", "price", "status", "tags")
REQUIRED = ("title", "price")
OPTIONAL = tuple(name for name in COLUMNS if name not in REQUIRED)


def _names(names: tuple[str, ...]) -> str:
    return ", ".join(f"`{name}`" for name in names)


# What a file must be, for OpenAPI (the `file` field and the operation): written from
# the constants `_parse` checks, so the document cannot drift from the parser.
CSV_RULES = (
    f"CSV, UTF-8 (a BOM is allowed), with a header row naming the columns: "
    f"{_names(REQUIRED)} are required, {_names(OPTIONAL)} optional; names are matched "
    "ignoring case and surrounding spaces, other columns (such as an export's `id` and "
    "`created_at`) are ignored. Each row is an `ItemCreate`: `price` a decimal with at "
    f"most two places (`12.50`), `status` one of {_names(tuple(ItemStatus))} (default "
    f"`{ItemCreate.model_fields['status'].default}`), `tags` separated by `;`; an empty "
    "optional cell takes the default. "
    f"At most {MAX_ROWS:,} rows, and the request at most `MAX_BODY_BYTES`."
)
INVALID_FILE = (
    "The form is invalid (no `file`, a `file` without a filename, an unknown field, an "
    "unknown `on_invalid`), the file is not UTF-8 or not readable as CSV, its header row "
    f"lacks {' or '.join(f'`{name}`' for name in REQUIRED)}, it has more than "
    f"{MAX_ROWS:,} rows, or, with `on_invalid=reject`, some rows are not valid items: "
    "`errors` then names each one `file.row<N>` (its line number) with what is wrong, "
    "and nothing is created"
)

IMPORT_DESCRIPTION = (
    f"Create items from a CSV file, in one transaction. The file: {CSV_RULES}\n\n"
    "With `on_invalid=reject` (the default) nothing is created if a row is invalid (422 "
    "lists them); with `skip` the valid rows are created and the others reported in "
    "`skipped`. Send `Idempotency-Key` to make retries safe."
)
IMPORT_OPENAPI = {
    "requestBody": {
        "description": f"A form: the CSV `file` (a header row with at least {_names(REQUIRED)}; "
        "see the field) and `on_invalid`."
    }
}


IMPORT_RESPONSES = problem_responses(
    403,
    429,
    503,
    described={413: "The request is larger than `MAX_BODY_BYTES`", 422: INVALID_FILE},
)


class ImportForm(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        arbitrary_types_allowed=True,
        # The file's content, not its name: a client (or Schemathesis) sending the
        # example sends a file the import accepts.
        json_schema_extra={
            "examples": [
                {"file": "title,price,tags\nRed lamp,12.50,home;vintage\n", "on_invalid": "reject"}
            ]
        },
    )

    file: UploadFile = Field(description=CSV_RULES)
    on_invalid: Annotated[
        Literal["reject", "skip"],
        Field(
            description="`reject`: nothing is created if a row is invalid; `skip`: create the rest."
        ),
    ] = "reject"


class RowProblem(BaseModel):
    row: int = Field(description="Line number in the file (the header is line 1).")
    errors: list[str]


class ImportResult(BaseModel):
    created: int
    skipped: list[RowProblem]


class InvalidRows(UnprocessableContent):
    def __init__(self, problems: list[RowProblem]) -> None:
        super().__init__("Some rows are not valid items; nothing was created", field="file")
        self.errors = [
            {
                "field": f"file.row{problem.row}",
                "message": "; ".join(problem.errors),
                "type": "invalid_row",
            }
            for problem in problems
        ]


@dataclass(frozen=True, slots=True)
class ParsedRows:
    valid: list[ItemCreate]
    invalid: list[RowProblem]


async def read_rows(upload: UploadFile) -> ParsedRows:
    """Decode and validate every row (one pass; the file is at most MAX_BODY_BYTES)."""
    try:
        text = codecs.decode(await upload.read(), "utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UnprocessableContent("The file is not UTF-8 text", field="file") from exc
    try:
        return _parse(csv.DictReader(io.StringIO(text, newline=""), strict=True))
    except csv.Error as exc:  # an unterminated quote, a field past 128 KiB...
        msg = f"The file is not a readable CSV file: {exc}"
        raise UnprocessableContent(msg, field="file") from exc


def _parse(reader: csv.DictReader[str]) -> ParsedRows:
    header = [name.strip().lower() for name in reader.fieldnames or []]
    missing = [name for name in REQUIRED if name not in header]
    if missing:
        msg = f"The header row lacks the columns: {', '.join(missing)}"
        raise UnprocessableContent(msg, field="file")
    reader.fieldnames = header
    valid: list[ItemCreate] = []
    invalid: list[RowProblem] = []
    for number, row in enumerate(reader, start=2):
        if number - 1 > MAX_ROWS:
            raise UnprocessableContent(f"At most {MAX_ROWS} rows per import", field="file")
        values = {name: (row.get(name) or "").strip() for name in COLUMNS}
        fields: dict[str, object] = {k: v for k, v in values.items() if v and k != "tags"}
        fields["tags"] = [tag for tag in values["tags"].split(";") if tag.strip()]
        try:
            valid.append(ItemCreate.model_validate(fields))
        except ValidationError as exc:
            errors = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
            invalid.append(RowProblem(row=number, errors=errors))
    return ParsedRows(valid, invalid)
