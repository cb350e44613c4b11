"""`multipart/form-data` as a stream of events, parsed as the body arrives.

FastAPI's `UploadFile` spools each file to a temporary file before the endpoint runs:
a size limit can only be checked after the whole file has landed on disk, and every
byte is written twice. This reader hands each part's bytes over as they come, so the
caller writes them once, straight to storage, and can stop the moment a limit is passed.
It is python-multipart's push parser (the one Starlette uses) turned into async events.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from app.core.errors import BadRequest


@dataclass(frozen=True, slots=True)
class PartStart:
    name: str
    filename: str | None  # None for a plain form field
    content_type: str | None  # lower-cased, without parameters


@dataclass(frozen=True, slots=True)
class PartData:
    data: bytes


@dataclass(frozen=True, slots=True)
class PartEnd:
    pass


Event = PartStart | PartData | PartEnd


@dataclass
class _Collector:
    events: list[Event] = field(default_factory=list)
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    header_name: bytearray = field(default_factory=bytearray)
    header_value: bytearray = field(default_factory=bytearray)

    def on_part_begin(self) -> None:
        self.headers = []

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        self.headers.append((bytes(self.header_name).lower(), bytes(self.header_value)))
        self.header_name.clear()
        self.header_value.clear()

    def on_headers_finished(self) -> None:
        found = dict(self.headers)
        _, options = parse_options_header(found.get(b"content-disposition", b""))
        if b"name" not in options:
            msg = "Every part needs a Content-Disposition header with a name"
            raise BadRequest(msg)
        filename = options.get(b"filename")
        content_type = found.get(b"content-type")
        self.events.append(
            PartStart(
                name=options[b"name"].decode("utf-8", "replace"),
                filename=filename.decode("utf-8", "replace") if filename is not None else None,
                content_type=(
                    parse_options_header(content_type)[0].decode("latin-1").lower()
                    if content_type
                    else None
                ),
            )
        )

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        self.events.append(PartData(data[start:end]))

    def on_part_end(self) -> None:
        self.events.append(PartEnd())


async def parse(content_type: str | None, body: AsyncIterator[bytes]) -> AsyncIterator[Event]:
    """The parts of a `multipart/form-data` body, as they stream in."""
    kind, options = parse_options_header(content_type)
    if kind != b"multipart/form-data" or not options.get(b"boundary"):
        msg = "Expected a multipart/form-data body with a boundary"
        raise BadRequest(msg)
    collector = _Collector()
    parser = MultipartParser(
        options[b"boundary"],
        {
            "on_part_begin": collector.on_part_begin,
            "on_header_field": collector.on_header_field,
            "on_header_value": collector.on_header_value,
            "on_header_end": collector.on_header_end,
            "on_headers_finished": collector.on_headers_finished,
            "on_part_data": collector.on_part_data,
            "on_part_end": collector.on_part_end,
        },
    )
    try:
        async for chunk in body:
            parser.write(chunk)
            for event in collector.events:
                yield event
            collector.events.clear()
        parser.finalize()
    except FormParserError as exc:
        msg = "The multipart body is malformed"
        raise BadRequest(msg) from exc
    for event in collector.events:
        yield event
