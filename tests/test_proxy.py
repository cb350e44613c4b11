"""Behind a proxy: uvicorn believes X-Forwarded-For/-Proto only from FORWARDED_ALLOW_IPS.

A live `app serve` (the headers are uvicorn's business, not the app's), with the test
client as the proxy (127.0.0.1) trusted or not. The client address it settles on is the
one the access log records and the per-address rate limits count.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from app.core.config import Settings
from app.core.resources import Resources
from tests.factories import create_account
from tests.live import live_env, start_server

FORWARDED = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}


@pytest.mark.parametrize(("trusted", "client", "scheme"), [
    ("127.0.0.1", "203.0.113.9", "https"),
    ("10.0.0.1", "127.0.0.1", "http"),
])  # fmt: skip
async def test_forwarded_headers_count_only_from_trusted_proxies(
    settings: Settings,
    committed: Resources,
    tmp_path: Path,
    trusted: str,
    client: str,
    scheme: str,
) -> None:
    log = tmp_path / "server.log"
    env = live_env(
        settings, tmp_path, FORWARDED_ALLOW_IPS=trusted, LOG_FORMAT="json", LOG_LEVEL="INFO"
    )
    server = await start_server(env, log_to=log)
    try:
        async with httpx.AsyncClient(base_url=server.url, headers=FORWARDED) as http:
            account = await create_account(http)
            created = await http.post(
                "/api/v1/items", json={"title": "Lamp", "price": "1.00"}, headers=account.headers
            )
    finally:
        server.stop()
    assert created.status_code == 201, created.text
    # The Location the app builds follows the scheme the proxy says the client used.
    assert created.headers["location"].startswith(f"{scheme}://")
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    clients = {line["http"]["client"] for line in lines if "http" in line}
    assert clients == {client}  # for every request of the test
