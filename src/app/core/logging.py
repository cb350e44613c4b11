"""Log records with the request id: readable lines in development, JSON lines otherwise."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Literal
from urllib.parse import unquote

from app.core.context import request_id_var


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get() or "-"
        return True


# What a log line must never carry, whoever wrote it (our code, uvicorn's DEBUG dump of
# WebSocket handshake headers, a library's exception message):
_SECRETS = (
    # The query string of any path, as in uvicorn's "WebSocket /api/v1/ws?token=..."
    # lines: it may hold a token (the WebSocket's `?token=` fallback) or what a user
    # searched for (`?q=`), personal data either way. The path stays.
    (re.compile(r"(/[^\s?\"']*)\?[^\s\"']+"), r"\1?[redacted]"),
    # A credential-bearing header, as `name: value` (uvicorn's "< x-api-key: ..." lines).
    (
        re.compile(
            r"((?:authorization|proxy-authorization|x-api-key|cookie|set-cookie"
            r"|sec-websocket-protocol)\s*:\s*)[^\r\n\"]+",
            re.IGNORECASE,
        ),
        r"\1[redacted]",
    ),
    # Anything shaped like a JWT or one of our API keys, wherever it appears.
    (re.compile(r"\beyJ[\w-]+\.[\w-]+\.[\w-]+"), "[redacted-jwt]"),
    (re.compile(r"\bak_[0-9a-f]+_[\w-]+"), "[redacted-api-key]"),
)


def _redacted(text: str) -> str:
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


def redact(text: str) -> str:
    """`text` without secrets, also those percent-encoded to slip past the patterns
    (`%74oken=`, `ey%4A...`): when the decoded form holds one, the decoded form is
    logged, redacted."""
    cleaned = _redacted(text)
    if "%" in cleaned:
        decoded = unquote(cleaned)
        if decoded != cleaned and _redacted(decoded) != decoded:
            return _redacted(decoded)
    return cleaned


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
            "request_id": getattr(record, "request_id", "-"),
        }
        http = getattr(record, "http", None)
        if http is not None:  # an access-log line: its fields, not just its text
            entry["http"] = http
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s [%(request_id)s] %(message)s"


def configure_logging(level: str, fmt: Literal["text", "json"]) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn and arq install their own handlers; route their records through ours.
    for name in ("uvicorn", "uvicorn.error", "arq"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # The access log is the app's own (app.access: the route template, never the query
    # string, one line per request). uvicorn writes its own only when `uvicorn.access`
    # has a handler, its own or by propagation: it must have neither, whichever way the
    # app is served (`app serve`, `uvicorn app.main:app`, `fastapi run`).
    access = logging.getLogger("uvicorn.access")
    access.handlers[:] = []
    access.propagate = False
