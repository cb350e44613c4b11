"""No secret reaches a log, even at DEBUG: a live API process and a live worker, every
credential a client or an operator hands the service, and a search of both logs.

The secrets: passwords (registration, login, a failed login, a change, a reset), access
and refresh tokens (body and cookie), the `Authorization` header, an API key, a reset
token (read from the email the worker sent), a token in a WebSocket URL, the metrics
password, the JWT secret and the database password. The console mail backend is left
out: in development it logs reset links on purpose (production refuses it).
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url
from websockets.asyncio.client import connect

from app.core.config import Settings
from app.core.resources import Resources
from bench.common import free_port, spawn, stop
from tests.factories import unique_email
from tests.jobs.conftest import SmtpServer, body_of
from tests.live import live_env, start_server
from tests.waiting import wait_until

API = "/api/v1"
PASSWORD = "first-password-Zq81"
WRONG_PASSWORD = "wrong-password-Xk27"
NEW_PASSWORD = "second-password-Wv44"
RESET_PASSWORD = "third-password-Tr09"
METRICS_PASSWORD = "metrics-password-Mp55"
DB_PASSWORD = "database-password-Db66"  # trust auth: PostgreSQL never asks for it
RESET_LINK = re.compile(r"/reset-password\?token=([A-Za-z0-9_-]{43})")


def _with_db_password(url: str) -> str:
    return make_url(url).set(password=DB_PASSWORD).render_as_string(hide_password=False)


async def _exercise(api: httpx.AsyncClient, ws_url: str, smtp: SmtpServer) -> list[str]:
    """Drive every credential path; return the secrets handed out along the way."""
    email = unique_email("logs")
    secrets: list[str] = []
    registered = await api.post(f"{API}/auth/register", json={"email": email, "password": PASSWORD})
    assert registered.status_code == 201, registered.text
    form = {"username": email, "password": WRONG_PASSWORD}
    assert (await api.post(f"{API}/auth/token", data=form)).status_code == 401
    form["password"] = PASSWORD
    tokens = (await api.post(f"{API}/auth/token", data=form)).json()
    access, refresh = tokens["access_token"], tokens["refresh_token"]
    bearer = {"Authorization": f"Bearer {access}"}
    secrets += [access, refresh]

    refreshed = await api.post(f"{API}/auth/refresh", json={"refresh_token": refresh})
    assert refreshed.status_code == 200
    access = refreshed.json()["access_token"]
    secrets += [access, refreshed.json()["refresh_token"]]
    bearer = {"Authorization": f"Bearer {access}"}

    cookie_login = await api.post(f"{API}/auth/token?cookie=true", data=form)
    assert cookie_login.status_code == 200
    cookie = cookie_login.cookies["refresh_token"]
    secrets += [cookie_login.json()["access_token"], cookie]
    by_cookie = await api.post(f"{API}/auth/refresh")  # the client's jar sends the cookie
    assert by_cookie.status_code == 200, by_cookie.text
    secrets += [by_cookie.json()["access_token"], by_cookie.cookies["refresh_token"]]
    api.cookies.clear()

    change = {"password": NEW_PASSWORD, "current_password": PASSWORD}
    changed = await api.patch(f"{API}/users/me", json=change, headers=bearer)
    assert changed.status_code == 200, changed.text
    tokens = (await api.post(f"{API}/auth/token", data=form | {"password": NEW_PASSWORD})).json()
    access = tokens["access_token"]
    bearer = {"Authorization": f"Bearer {access}"}
    secrets += [access, tokens["refresh_token"]]

    created = await api.post(
        f"{API}/users/me/api-keys",
        json={"name": "sync", "scopes": ["items:read", "events:read"]},
        headers=bearer,
    )
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    secrets.append(key)
    assert (await api.get(f"{API}/items", headers={"X-API-Key": key})).status_code == 200
    assert (await api.get(f"{API}/items", headers={"X-API-Key": key + "x"})).status_code == 401

    # Each way a WebSocket client authenticates: URL, subprotocol, API key header.
    for url, options in (
        (f"{ws_url}?token={access}", {}),
        (ws_url, {"subprotocols": ["bearer", access]}),
        (ws_url, {"additional_headers": {"X-API-Key": key}}),
    ):
        async with connect(url, **options) as ws:
            await ws.send(json.dumps({"type": "ping"}))
            assert json.loads(await ws.recv()) == {"type": "pong"}

    basic = base64.b64encode(f"scraper:{METRICS_PASSWORD}".encode()).decode()
    metrics = await api.get("/metrics", headers={"Authorization": f"Basic {basic}"})
    assert metrics.status_code == 200

    ended = await api.post(
        f"{API}/auth/logout", json={"refresh_token": tokens["refresh_token"]}, headers=bearer
    )
    assert ended.status_code == 204, ended.text

    recovery = await api.post(f"{API}/auth/password-recovery", json={"email": email})
    assert recovery.status_code == 202
    await wait_until(lambda: len(smtp.inbox.messages) >= 2, within=20)  # welcome, reset
    (reset_mail,) = [m for _, m in smtp.inbox.messages if "Reset" in m["Subject"]]
    match = RESET_LINK.search(body_of(reset_mail))
    assert match is not None
    secrets.append(match.group(1))
    reset = await api.post(
        f"{API}/auth/reset-password",
        json={"token": match.group(1), "new_password": RESET_PASSWORD},
    )
    assert reset.status_code == 204, reset.text
    return secrets


@pytest.mark.parametrize("log_format", ["json", "text"])
async def test_no_password_token_key_or_secret_reaches_the_logs_at_debug(
    settings: Settings, committed: Resources, tmp_path: Path, log_format: str
) -> None:
    smtp = SmtpServer(free_port())
    smtp.start()
    env = live_env(
        settings,
        tmp_path / "storage",
        DATABASE_URL=_with_db_password(settings.database.url),
        LOG_LEVEL="DEBUG",
        LOG_FORMAT=log_format,
        MAIL_BACKEND="smtp",
        MAIL_SMTP_PORT=str(smtp.port),
        METRICS_USERNAME="scraper",
        METRICS_PASSWORD=METRICS_PASSWORD,
    )
    server_log, worker_log = tmp_path / "server.log", tmp_path / "worker.log"
    server = await start_server(env, log_to=server_log)
    worker = spawn(["worker"], env, log_to=worker_log)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=20) as api:
            secrets = await _exercise(api, server.ws_url, smtp)
    finally:
        server.stop()
        stop(worker)
        smtp.stop()

    logs = {"server": server_log.read_text(), "worker": worker_log.read_text()}
    # The logs are there and detailed: the search below is not over an empty file.
    assert "/api/v1/auth/token" in logs["server"]
    assert "DEBUG" in logs["server"]
    assert "auth.send_password_reset" in logs["worker"]
    secrets += [
        PASSWORD,
        WRONG_PASSWORD,
        NEW_PASSWORD,
        RESET_PASSWORD,
        METRICS_PASSWORD,
        DB_PASSWORD,
        settings.auth.jwt_secret.get_secret_value(),
    ]
    # A JWT's signature alone is a secret too, and so is the Basic credential.
    secrets += [token.rsplit(".", 1)[1] for token in secrets if token.count(".") == 2]
    secrets.append(base64.b64encode(f"scraper:{METRICS_PASSWORD}".encode()).decode())
    for name, text in logs.items():
        leaked = [secret[:12] + "..." for secret in secrets if secret in text]
        assert not leaked, f"the {name} log holds secrets: {leaked}"
