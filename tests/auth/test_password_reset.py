from __future__ import annotations

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
from app.models import PasswordResetToken
from tests.conftest import RunJobs
from tests.factories import PASSWORD, create_account, login, unique_email

RECOVER = "/api/v1/auth/password-recovery"
RESET = "/api/v1/auth/reset-password"
NEW_PASSWORD = "brand-new-password-2"


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
    match = re.search(r"/reset-password\?token=([0-9a-f]{64})", mails[0])
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
    """ARQ may run a job twice: one stored token, and the same link both times."""
    caplog.set_level(logging.INFO, logger="app.core.mail")
    account = await create_account(client)
    job_id = "auth.send_password_reset:same-job"
    ctx = {
        "resources": replace(resources, sessionmaker=sessionmaker),
        "job_id": job_id,
        "job_try": 1,
    }
    for _ in range(2):
        await redis_forget_sent_mail(resources, job_id)
        assert await send_password_reset(ctx, account.email)
    links = re.findall(r"token=([0-9a-f]{64})", caplog.text)
    assert len(links) == 2
    assert links[0] == links[1]
    stored = (await db.scalars(select(PasswordResetToken))).all()
    assert len(stored) == 1
    assert stored[0].token_hash != links[0]


async def redis_forget_sent_mail(resources: Resources, job_id: str) -> None:
    """Forget that the mail went out, so the rerun really sends it again."""
    await resources.redis.delete(f"mail:sent:{job_id}")
