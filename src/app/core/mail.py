"""Outgoing email behind a small interface; the backend is chosen by MAIL_BACKEND."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from app.core.config import MailSettings

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EmailMessage:
    to: str
    subject: str
    body: str


class MailBackend(Protocol):
    async def send(self, message: EmailMessage) -> None: ...


class ConsoleMailBackend:
    """Development backend: the message is written to the log instead of being sent."""

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


def build_mail_backend(settings: MailSettings) -> MailBackend:
    return ConsoleMailBackend(settings.sender)
