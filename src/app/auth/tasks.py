"""ARQ jobs of the auth domain."""

from __future__ import annotations

import logging
from typing import Any

from arq.worker import Function, func

from app.auth import service as auth_service
from app.auth.service import AuthKit
from app.core.db import session_scope
from app.core.jobs import job_info
from app.core.mail import build_mail_backend
from app.core.resources import Resources

logger = logging.getLogger(__name__)


async def send_password_reset(ctx: dict[str, Any], email: str) -> bool:
    resources: Resources = ctx["resources"]
    async with session_scope(resources.sessionmaker, info=job_info(resources.arq)) as session:
        sent = await auth_service.send_password_reset(
            session,
            email=email,
            job_id=ctx["job_id"],
            kit=AuthKit.from_resources(resources),
            mail=build_mail_backend(resources.settings.mail),
        )
    if not sent:
        logger.info("password reset requested for an unknown or inactive account")
    return sent


FUNCTIONS: list[Function] = [
    func(send_password_reset, name=auth_service.SEND_PASSWORD_RESET, timeout=30, max_tries=5),
]
