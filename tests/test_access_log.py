"""One access line per request, without its query string, however the app is served:
`app serve` and uvicorn's own command line (as FastAPI's deployment docs run it), each
a live process with the default log level.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from app.core.config import Settings
from app.core.resources import Resources
from bench.common import free_port, spawn, stop, wait_for_http
from tests.factories import unique_email
from tests.live import live_env

PRIVATE = "PATIENT-HIV-POSITIVE"
SEARCH = f"/api/v1/items?q={PRIVATE}-jane.doe%40example.com"
COMMANDS = {
    "app serve": ["serve", "--port", "{port}"],
    "uvicorn": ["-m", "uvicorn", "app.main:app", "--port", "{port}"],
}


async def _drive(base: str) -> str:
    """Three searches and a WebSocket whose token hides behind a percent-encoded
    name; the access token used."""
    async with httpx.AsyncClient(base_url=base, timeout=10) as api:
        email = unique_email("access")
        body = {"email": email, "password": "access-log-password-1"}
        assert (await api.post("/api/v1/auth/register", json=body)).status_code == 201
        form = {"username": email, "password": body["password"]}
        token: str = (await api.post("/api/v1/auth/token", data=form)).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        for _ in range(3):
            assert (await api.get(SEARCH, headers=headers)).status_code == 200
    ws = base.replace("http", "ws", 1) + f"/api/v1/ws?%74oken={token}"
    async with connect(ws) as socket:
        await socket.send(json.dumps({"type": "ping"}))
        assert json.loads(await socket.recv()) == {"type": "pong"}
    return token


@pytest.mark.parametrize("served_by", list(COMMANDS))
async def test_one_access_line_per_request_and_no_query_string(
    settings: Settings, committed: Resources, tmp_path: Path, served_by: str
) -> None:
    port = free_port()
    env = live_env(settings, tmp_path / "storage", LOG_LEVEL="INFO", LOG_FORMAT="text")
    log = tmp_path / "server.log"
    args = [arg.format(port=port) for arg in COMMANDS[served_by]]
    process = spawn(args, env, log_to=log)
    try:
        await asyncio.to_thread(wait_for_http, f"http://127.0.0.1:{port}/health/live")
        token = await _drive(f"http://127.0.0.1:{port}")
    finally:
        stop(process)
    text = log.read_text()
    searches = [line for line in text.splitlines() if "/api/v1/items" in line]
    assert len(searches) == 3, "\n".join(searches)
    assert all(" app.access " in line for line in searches)
    assert "uvicorn.access" not in text
    assert "/api/v1/ws" in text  # uvicorn's WebSocket line is there, redacted
    for secret in (PRIVATE, "jane.doe", token, token.rsplit(".", 1)[1]):
        assert secret not in text, secret
