"""A real SMTP server on loopback (aiosmtpd), started and stopped by the test."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from app.core.config import MailSettings, Settings
from bench.common import free_port


@dataclass
class Inbox:
    """What the SMTP server accepted, or the reply it gives instead."""

    messages: list[tuple[list[str], Message]] = field(default_factory=list)
    reject_with: str | None = None

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        if self.reject_with is not None:
            return self.reject_with
        assert isinstance(envelope.content, bytes)
        self.messages.append((list(envelope.rcpt_tos), message_from_bytes(envelope.content)))
        return "250 Message accepted for delivery"

    def bodies(self) -> list[str]:
        return [body_of(message) for _, message in self.messages]


def body_of(message: Message) -> str:
    payload = message.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.decode()


class SmtpServer:
    def __init__(self, port: int) -> None:
        self.port = port
        self.inbox = Inbox()
        self._controller: Controller | None = None

    def start(self) -> None:
        self._controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    """An SMTP server on a free port, not yet started (tests start it when they want)."""
    server = SmtpServer(free_port())
    yield server
    server.stop()


@pytest.fixture
def smtp_settings(settings: Settings, smtp: SmtpServer) -> Settings:
    mail = MailSettings(
        _env_file=None,
        backend="smtp",
        smtp_port=smtp.port,
        smtp_timeout=2,
        retry_backoff_seconds=0.2,
    )
    return settings.model_copy(update={"mail": mail})
