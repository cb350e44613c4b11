"""Outgoing email behind a small interface; MAIL_BACKEND picks the implementation.

Backends raise `TemporaryMailError` when trying again later may work (the server is
unreachable, or answered 4xx) and `PermanentMailError` when it will not (5xx): the jobs
that send mail retry the first with backoff and record the second.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from email.message import EmailMessage as MimeMessage
from email.utils import make_msgid
from typing import Protocol

import aiosmtplib
from redis.asyncio import Redis

from app.core.config import MailSettings
from app.core.jobs import retry_backoff

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EmailMessage:
    to: str
    subject: str
    body: str
    # A stable id (from the job id) lets a receiver recognise a resend of the same mail.
    message_id: str | None = None


class TemporaryMailError(Exception):
    pass


class PermanentMailError(Exception):
    pass


class MailBackend(Protocol):
    async def send(self, message: EmailMessage) -> None: ...


class ConsoleMailBackend:
    """Development backend: the message is written to the log instead of being sent.
    Refused in production (see Settings), since the log would then hold reset links."""

    def __init__(self, sender: str) -> None:
        self.sender = sender

    async def send(self, message: EmailMessage) -> None:
        logger.info(
            "email (console backend) from=%s to=%s subject=%s\n%s",
            self.sender,
            message.to,
            message.subject,
            message.body,
        )


class SmtpMailBackend:
    def __init__(self, settings: MailSettings) -> None:
        self.settings = settings

    async def send(self, message: EmailMessage) -> None:
        settings = self.settings
        mime = MimeMessage()
        mime["From"] = settings.sender
        mime["To"] = message.to
        mime["Subject"] = message.subject
        mime["Message-ID"] = message.message_id or make_msgid()
        mime.set_content(message.body)
        password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
        try:
            await aiosmtplib.send(
                mime,
                hostname=settings.smtp_host,
                port=settings.smtp_port,
                username=settings.smtp_username,
                password=password,
                use_tls=settings.smtp_security == "tls",
                start_tls=settings.smtp_security == "starttls",
                timeout=settings.smtp_timeout,
            )
        except aiosmtplib.SMTPResponseException as exc:
            error = f"SMTP {exc.code}: {exc.message}"
            raise (TemporaryMailError if 400 <= exc.code < 500 else PermanentMailError)(
                error
            ) from exc
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [refusal.code for refusal in exc.recipients]
            kind = TemporaryMailError if all(400 <= c < 500 for c in codes) else PermanentMailError
            raise kind(f"recipient refused ({codes})") from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise TemporaryMailError(f"{type(exc).__name__}: {exc}") from exc


SENT_TTL_SECONDS = 7 * 24 * 3600


def _sent_key(job_id: str) -> str:
    return f"mail:sent:{job_id}"


async def already_sent(redis: Redis, job_id: str) -> bool:
    """Whether job `job_id` sent its email (a job that runs again after sending must not
    build a new message, for example with a new token)."""
    return bool(await redis.exists(_sent_key(job_id)))


async def deliver(
    message: EmailMessage,
    *,
    settings: MailSettings,
    redis: Redis,
    job_id: str,
    attempt: int,
) -> None:
    """Send `message` from job `job_id`: once, retried with backoff while the failure
    is temporary. A permanent failure is logged and fails the job, which ARQ records."""
    sent_key = _sent_key(job_id)
    if await redis.exists(sent_key):
        logger.info("email of job %s was already sent", job_id)
        return
    try:
        await build_mail_backend(settings).send(message)
    except TemporaryMailError as exc:
        retry = retry_backoff(attempt, settings.retry_backoff_seconds)
        logger.warning("email not sent (%s); try %d, retrying later", exc, attempt)
        raise retry from exc
    except PermanentMailError as exc:
        logger.error("email permanently refused: %s", exc)
        raise
    await redis.set(sent_key, "1", ex=SENT_TTL_SECONDS)


def build_mail_backend(settings: MailSettings) -> MailBackend:
    if settings.backend == "smtp":
        return SmtpMailBackend(settings)
    return ConsoleMailBackend(settings.sender)
