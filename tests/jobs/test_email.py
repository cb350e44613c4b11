from __future__ import annotations

import asyncio
import logging
import re

import httpx
import pytest

from app.core.config import Settings
from tests.conftest import RunJobs
from tests.factories import create_account, login, unique_email
from tests.jobs.conftest import SmtpServer, body_of
from tests.waiting import wait_until

SECRET_PASSWORD = "hunter2-is-my-password"


async def test_welcome_email_arrives_once(
    client: httpx.AsyncClient, run_jobs: RunJobs, smtp: SmtpServer, smtp_settings: Settings
) -> None:
    smtp.start()
    account = await create_account(client, full_name="Ada")
    assert await run_jobs(settings=smtp_settings) == 1
    assert await run_jobs(settings=smtp_settings) == 0
    assert len(smtp.inbox.messages) == 1
    recipients, message = smtp.inbox.messages[0]
    assert recipients == [account.email]
    assert message["Subject"] == "Welcome to App API"
    assert message["From"] == "App <no-reply@example.com>"
    assert "Hello Ada" in smtp.inbox.bodies()[0]


async def test_reset_email_carries_a_working_link_and_never_the_password(
    client: httpx.AsyncClient,
    run_jobs: RunJobs,
    smtp: SmtpServer,
    smtp_settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    smtp.start()
    account = await create_account(client, password=SECRET_PASSWORD)
    await client.post("/api/v1/auth/password-recovery", json={"email": account.email})
    assert await run_jobs(settings=smtp_settings) == 2

    ((recipients, message),) = [m for m in smtp.inbox.messages if "Reset" in m[1]["Subject"]]
    assert recipients == [account.email]
    assert message["Subject"] == "Reset your App API password"
    body = body_of(message)
    match = re.search(r"http://127\.0\.0\.1:8000/reset-password\?token=([A-Za-z0-9_-]{43})", body)
    assert match is not None
    reset = await client.post(
        "/api/v1/auth/reset-password",
        json={"token": match.group(1), "new_password": "a-new-password-5"},
    )
    assert reset.status_code == 204
    assert (await login(client, account.email, "a-new-password-5")).status_code == 200

    assert all(SECRET_PASSWORD not in text for text in smtp.inbox.bodies())
    assert SECRET_PASSWORD not in caplog.text


async def test_smtp_down_then_up_delivers_after_retries(
    client: httpx.AsyncClient, run_jobs: RunJobs, smtp: SmtpServer, smtp_settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.INFO, logger="app.core.mail")
    account = await create_account(client)
    worker = asyncio.create_task(run_jobs(settings=smtp_settings))
    # The server is down: wait for the worker to fail once and schedule a retry.
    await wait_until(lambda: "retrying later" in caplog.text)
    smtp.start()
    async with asyncio.timeout(30):
        completed = await worker
    assert completed == 1
    assert [recipients for recipients, _ in smtp.inbox.messages] == [[account.email]]


async def test_a_permanent_refusal_fails_the_job_without_retrying(
    client: httpx.AsyncClient,
    run_jobs: RunJobs,
    smtp: SmtpServer,
    smtp_settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    smtp.inbox.reject_with = "550 5.1.1 Mailbox does not exist"
    smtp.start()
    await client.post(
        "/api/v1/auth/register", json={"email": unique_email(), "password": "a-password-1"}
    )
    assert await run_jobs(settings=smtp_settings) == 0
    assert "email permanently refused: SMTP 550" in caplog.text
    assert "retrying later" not in caplog.text
    assert "outcome=failed" in caplog.text
