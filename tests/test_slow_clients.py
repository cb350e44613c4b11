"""A client that stops sending its body is answered 408 and let go, on a live server:
the wait for each next part of a body is bounded (BODY_STALL_TIMEOUT_SECONDS)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from app.core.config import Settings
from app.core.resources import Resources
from tests.factories import create_account
from tests.live import live_env, start_server

STALL_SECONDS = 1


async def _bearer(port: int) -> str:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as api:
        account = await create_account(api)
    return account.headers["Authorization"]


async def _stalled_request(
    port: int, path: str, content_type: str, first_bytes: bytes, authorization: str
) -> tuple[bytes, float]:
    """Headers and the first bytes of a 1,000-byte body, then nothing; the answer and
    how long it took."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
        f"Authorization: {authorization}\r\nContent-Length: 1000\r\n\r\n".encode()
        + first_bytes
    )
    await writer.drain()
    try:
        answer = await asyncio.wait_for(reader.read(4096), timeout=STALL_SECONDS + 10)
    finally:
        writer.close()
    return answer, time.monotonic() - started


@pytest.mark.parametrize(
    ("path", "content_type", "first_bytes"),
    [
        ("/api/v1/auth/register", "application/json", b'{"email"'),
        (
            "/api/v1/files",
            "multipart/form-data; boundary=x",
            b'--x\r\nContent-Disposition: form-data; name="files"; filename="a.txt"\r\n'
            b"Content-Type: text/plain\r\n\r\nhello",
        ),
    ],
)
async def test_a_stalled_body_is_answered_408(
    settings: Settings,
    committed: Resources,
    tmp_path: Path,
    path: str,
    content_type: str,
    first_bytes: bytes,
) -> None:
    env = live_env(settings, tmp_path / "storage", BODY_STALL_TIMEOUT_SECONDS=str(STALL_SECONDS))
    server = await start_server(env)
    try:
        authorization = await _bearer(server.port)
        answer, elapsed = await _stalled_request(
            server.port, path, content_type, first_bytes, authorization
        )
    finally:
        server.stop()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"application/problem+json" in answer
    assert STALL_SECONDS <= elapsed < STALL_SECONDS + 5
