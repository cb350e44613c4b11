from __future__ import annotations

import hashlib
import hmac
import logging
import re
from dataclasses import replace
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth.tasks import send_password_reset
from app.core.db import utcnow
from app.core.resources import Resources
from app.core.security import sha256_hex
from app.models import PasswordResetToken
from tests.conftest import RunJobs, build_test_settings
from tests.factories import PASSWORD, create_account, login, unique_email

RECOVER = "/api/v1/auth/password-recovery"
RESET = "/api/v1/auth/reset-password"
NEW_PASSWORD = "brand-new-password-2"
TOKEN_PATTERN = r"[A-Za-z0-9_-]{43}"  # secrets.token_urlsafe(32)


async def _reset_token(
    client: httpx.AsyncClient, run_jobs: RunJobs, caplog: pytest.LogCaptureFixture, email: str
) -> str:
    caplog.set_level(logging.INFO, logger="app.core.mail")
    await run_jobs()  # the welcome email of the new account
    caplog.clear()
    response = await client.post(RECOVER, json={"email": email})
    assert response.status_code == 202
    assert await run_jobs() == 1
    mails = [record.getMessage() for record in caplog.records if record.name == "app.core.mail"]
    assert len(mails) == 1
    assert f"to={email}" in mails[0]
    match = re.search(rf"/reset-password\?token=({TOKEN_PATTERN})", mails[0])
    assert match is not None
    return match.group(1)


async def test_recovery_answers_the_same_for_unknown_and_known_emails(
    client: httpx.AsyncClient, run_jobs: RunJobs, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app.core.mail")
    account = await create_account(client)
    await run_jobs()  # the welcome email
    caplog.clear()
    known = await client.post(RECOVER, json={"email": account.email})
    unknown = await client.post(RECOVER, json={"email": unique_email("nobody")})
    assert known.status_code == unknown.status_code == 202
    assert known.json() == unknown.json()
    assert await run_jobs() == 2
    mails = [record for record in caplog.records if record.name == "app.core.mail"]
    assert len(mails) == 1


async def test_reset_sets_the_new_password_and_signs_out_everywhere(
    client: httpx.AsyncClient, run_jobs: RunJobs, caplog: pytest.LogCaptureFixture
) -> None:
    account = await create_account(client)
    token = await _reset_token(client, run_jobs, caplog, account.email)

    response = await client.post(RESET, json={"token": token, "new_password": NEW_PASSWORD})
    assert response.status_code == 204

    assert (await login(client, account.email, PASSWORD)).status_code == 401
    assert (await login(client, account.email, NEW_PASSWORD)).status_code == 200
    assert (await client.get("/api/v1/users/me", headers=account.headers)).status_code == 401
    refreshed = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": account.refresh_token}
    )
    assert refreshed.status_code == 401


async def test_a_reset_token_works_once(
    client: httpx.AsyncClient, run_jobs: RunJobs, caplog: pytest.LogCaptureFixture
) -> None:
    account = await create_account(client)
    token = await _reset_token(client, run_jobs, caplog, account.email)
    first = await client.post(RESET, json={"token": token, "new_password": NEW_PASSWORD})
    again = await client.post(RESET, json={"token": token, "new_password": "third-password-3"})
    assert first.status_code == 204
    assert again.status_code == 401
    assert (await login(client, account.email, NEW_PASSWORD)).status_code == 200


async def test_an_expired_reset_token_is_refused(
    client: httpx.AsyncClient,
    run_jobs: RunJobs,
    caplog: pytest.LogCaptureFixture,
    db: AsyncSession,
) -> None:
    account = await create_account(client)
    token = await _reset_token(client, run_jobs, caplog, account.email)
    await db.execute(update(PasswordResetToken).values(expires_at=utcnow() - timedelta(seconds=1)))
    await db.commit()
    response = await client.post(RESET, json={"token": token, "new_password": NEW_PASSWORD})
    assert response.status_code == 401
    assert (await login(client, account.email, PASSWORD)).status_code == 200


async def test_an_unknown_reset_token_is_refused(client: httpx.AsyncClient) -> None:
    response = await client.post(RESET, json={"token": "0" * 64, "new_password": NEW_PASSWORD})
    assert response.status_code == 401


async def test_reset_still_enforces_the_password_policy(client: httpx.AsyncClient) -> None:
    response = await client.post(RESET, json={"token": "0" * 64, "new_password": "weak"})
    assert response.status_code == 422


async def test_the_reset_job_is_idempotent(
    client: httpx.AsyncClient,
    resources: Resources,
    sessionmaker: async_sessionmaker[AsyncSession],
    caplog: pytest.LogCaptureFixture,
    db: AsyncSession,
) -> None:
    """ARQ may run a job twice: after a send it sends nothing new; when the first send
    was lost it mails a new token that replaces its first one (one row, one live link)."""
    caplog.set_level(logging.INFO, logger="app.core.mail")
    account = await create_account(client)
    job_id = "auth.send_password_reset:same-job"
    ctx = {
        "resources": replace(resources, sessionmaker=sessionmaker),
        "job_id": job_id,
        "job_try": 1,
    }
    assert await send_password_reset(ctx, account.email)
    assert await send_password_reset(ctx, account.email)  # already sent: nothing new
    assert len(re.findall(rf"token=({TOKEN_PATTERN})", caplog.text)) == 1
    await redis_forget_sent_mail(resources, job_id)
    assert await send_password_reset(ctx, account.email)
    links = re.findall(rf"token=({TOKEN_PATTERN})", caplog.text)
    assert len(links) == 2
    assert links[0] != links[1]
    stored = (await db.scalars(select(PasswordResetToken))).all()
    assert len(stored) == 1
    assert stored[0].token_hash not in links
    stale = await client.post(RESET, json={"token": links[0], "new_password": NEW_PASSWORD})
    assert stale.status_code == 401
    fresh = await client.post(RESET, json={"token": links[1], "new_password": NEW_PASSWORD})
    assert fresh.status_code == 204


async def test_every_recovery_request_sends_its_own_email(
    client: httpx.AsyncClient, run_jobs: RunJobs, caplog: pytest.LogCaptureFixture
) -> None:
    """Two requests within one minute: two emails, two different links, each works."""
    caplog.set_level(logging.INFO, logger="app.core.mail")
    account = await create_account(client)
    await run_jobs()
    caplog.clear()
    for _ in range(2):
        assert (await client.post(RECOVER, json={"email": account.email})).status_code == 202
    assert await run_jobs() == 2
    links = re.findall(rf"token=({TOKEN_PATTERN})", caplog.text)
    assert len(set(links)) == 2
    first = await client.post(RESET, json={"token": links[0], "new_password": NEW_PASSWORD})
    assert first.status_code == 204
    # A reset spends every token of the account.
    second = await client.post(RESET, json={"token": links[1], "new_password": "other-pass-33"})
    assert second.status_code == 401


async def test_a_reset_token_cannot_be_computed_from_the_email(
    client: httpx.AsyncClient, run_jobs: RunJobs, caplog: pytest.LogCaptureFixture
) -> None:
    """Whoever knows the email and the server's JWT secret still cannot derive a token
    (the derivation a token must never follow: an HMAC of job id and minute)."""
    account = await create_account(client)
    await _reset_token(client, run_jobs, caplog, account.email)
    secret = client_settings_secret()
    now = int(utcnow().timestamp()) // 60
    for minute in (now - 1, now, now + 1):
        job_id = f"auth.send_password_reset:{sha256_hex(account.email)[:32]}:{minute}"
        guess = hmac.new(secret, f"password-reset:{job_id}".encode(), hashlib.sha256).hexdigest()
        answer = await client.post(RESET, json={"token": guess, "new_password": NEW_PASSWORD})
        assert answer.status_code == 401
    assert (await login(client, account.email, PASSWORD)).status_code == 200


def client_settings_secret() -> bytes:
    return build_test_settings().auth.jwt_secret.get_secret_value().encode()


async def redis_forget_sent_mail(resources: Resources, job_id: str) -> None:
    """Forget that the mail went out, so the rerun really sends it again."""
    await resources.redis.delete(f"mail:sent:{job_id}")
