"""Does a file's first bytes match the content type its uploader declared?

Only the types the service may accept are known here; the allow-list in settings must
be a subset (checked when the settings load).
"""

from __future__ import annotations

import codecs
from collections.abc import Callable

# Enough for every signature below, and for a fair look at the start of a text file.
SNIFF_BYTES = 1024


def _is_text(head: bytes, whole: bool) -> bool:
    # UTF-8 without NUL bytes; unless `head` is the whole file, its end may cut a
    # multi-byte character in half.
    if b"\x00" in head:
        return False
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=whole)
    except UnicodeDecodeError:
        return False
    return True


def _is_json(head: bytes, whole: bool) -> bool:
    stripped = head.lstrip(b" \t\r\n\xef\xbb\xbf")
    return _is_text(head, whole) and (not stripped or stripped[:1] in b'{["-0123456789tfn')


def _starts_with(*magic: bytes) -> Callable[[bytes, bool], bool]:
    return lambda head, whole: head.startswith(magic)


SIGNATURES: dict[str, Callable[[bytes, bool], bool]] = {
    "image/png": _starts_with(b"\x89PNG\r\n\x1a\n"),
    "image/jpeg": _starts_with(b"\xff\xd8\xff"),
    "image/gif": _starts_with(b"GIF87a", b"GIF89a"),
    "image/webp": lambda head, whole: head[:4] == b"RIFF" and head[8:12] == b"WEBP",
    "application/pdf": _starts_with(b"%PDF-"),
    "application/zip": _starts_with(b"PK\x03\x04", b"PK\x05\x06"),
    "text/plain": _is_text,
    "text/csv": _is_text,
    "application/json": _is_json,
    # Opaque bytes: nothing to check (allow it only where any content is acceptable).
    "application/octet-stream": lambda head, whole: True,
}


def matches(content_type: str, head: bytes, *, whole: bool) -> bool:
    """Whether `head`, the first SNIFF_BYTES of a file (or all of it: `whole`), fits
    `content_type`."""
    check = SIGNATURES.get(content_type)
    return check is not None and check(head, whole)
