"""ARQ jobs of the auth domain."""

from __future__ import annotations

import logging
from typing import Any
from uuid import UUID

from arq.cron import CronJob
from arq.worker import Function

from app.auth import service as auth_service
from app.auth.service import AuthKit
from app.core.jobs import cron_job, job
from app.core.mail import EmailMessage, already_sent, deliver
from app.core.resources import Resources

logger = logging.getLogger(__name__)

MAIL_MAX_TRIES = 8


async def _send(ctx: dict[str, Any], message: EmailMessage | None) -> bool:
    if message is None:
        logger.info("no email to send: unknown or inactive account")
        return False
    resources: Resources = ctx["resources"]
    await deliver(
        message,
        settings=resources.settings.mail,
        redis=resources.redis,
        job_id=ctx["job_id"],
        attempt=ctx["job_try"],
    )
    return True


async def send_password_reset(ctx: dict[str, Any], email: str) -> bool:
    resources: Resources = ctx["resources"]
    if await already_sent(resources.redis, ctx["job_id"]):
        return True  # a retry after the send: the link mailed must stay the one that works
    async with resources.session() as session:
        message = await auth_service.password_reset_message(
            session, email=email, job_id=ctx["job_id"], kit=AuthKit.from_resources(resources)
        )
    return await _send(ctx, message)


async def send_welcome_email(ctx: dict[str, Any], user_id: str) -> bool:
    resources: Resources = ctx["resources"]
    async with resources.session() as session:
        message = await auth_service.welcome_message(
            session,
            user_id=UUID(user_id),
            job_id=ctx["job_id"],
            kit=AuthKit.from_resources(resources),
        )
    return await _send(ctx, message)


async def purge_expired_tokens(ctx: dict[str, Any]) -> dict[str, int]:
    resources: Resources = ctx["resources"]
    async with resources.session() as session:
        refresh, reset = await auth_service.purge_expired_tokens(session)
    logger.info("purged %d refresh tokens and %d reset tokens", refresh, reset)
    return {"refresh_tokens": refresh, "reset_tokens": reset}


FUNCTIONS: list[Function] = [
    job(
        send_password_reset,
        name=auth_service.SEND_PASSWORD_RESET,
        timeout=30,
        max_tries=MAIL_MAX_TRIES,
    ),
    job(
        send_welcome_email,
        name=auth_service.SEND_WELCOME_EMAIL,
        timeout=30,
        max_tries=MAIL_MAX_TRIES,
    ),
]

CRON_JOBS: list[CronJob] = [
    cron_job(purge_expired_tokens, name="auth.purge_expired_tokens", timeout=120, minute={7, 37}),
]
