"""Running a request again when PostgreSQL gave up on its transaction.

A deadlock (SQLSTATE 40P01), a serialization failure (40001) or a lock that could not
be taken (55P03) is not the client's fault and not a bug: the database rolled the
transaction back, and the same request started afresh usually succeeds. So:

- the error handler (`app.core.errors`) answers such an error with a 503 problem and
  `Retry-After`, and flags the request as retryable (`mark_retryable`);
- `RetryTransientMiddleware`, the innermost middleware, drops that 503 before any byte
  of it leaves and runs the whole request once more, replaying the body it recorded.
  Everything the first attempt did was rolled back with its transaction (after-commit
  work never ran; an `Idempotency-Key` it took was released), so the second attempt
  starts from a clean state. Its answer, whatever it is, goes to the client; a second
  transient failure reaches the client as the 503.

A request is only run again while nothing was sent and its body was small enough to
keep (`MAX_REPLAY_BYTES`; a large upload answers the 503 and the client retries).
Rate limits count the request once (`is_retry`).
"""

from __future__ import annotations

import logging
from collections import deque

from sqlalchemy.exc import DBAPIError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger(__name__)

# deadlock_detected, serialization_failure, lock_not_available
RETRYABLE_SQLSTATES = frozenset({"40P01", "40001", "55P03"})
MAX_REPLAY_BYTES = 1024 * 1024
_RETRYABLE_KEY = "app.retryable"
_ATTEMPT_KEY = "app.attempt"


def is_transient(exc: BaseException) -> bool:
    """True for an error after which the same transaction, run again, may succeed."""
    if isinstance(exc, DBAPIError):
        exc = exc.orig if isinstance(exc.orig, BaseException) else exc
    return getattr(exc, "sqlstate", None) in RETRYABLE_SQLSTATES


def mark_retryable(scope: Scope) -> None:
    """The response about to be sent answers a transient failure: run the request again
    instead, if it still can be."""
    scope[_RETRYABLE_KEY] = True


def is_retry(scope: Scope) -> bool:
    """True while a request runs for the second time (counted once already)."""
    attempt: int = scope.get(_ATTEMPT_KEY, 1)
    return attempt > 1


class RetryTransientMiddleware:
    def __init__(self, app: ASGIApp, *, max_replay_bytes: int = MAX_REPLAY_BYTES) -> None:
        self.app = app
        self.max_replay_bytes = max_replay_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        recorded: list[Message] = []
        recorded_bytes = 0
        replayable = True
        dropped = False

        async def recording_receive() -> Message:
            nonlocal recorded_bytes, replayable
            message = await receive()
            if replayable and message["type"] == "http.request":
                recorded_bytes += len(message.get("body", b""))
                if recorded_bytes > self.max_replay_bytes:
                    replayable = False
                    recorded.clear()
                else:
                    recorded.append(message)
            return message

        async def dropping_send(message: Message) -> None:
            nonlocal dropped
            if message["type"] == "http.response.start" and scope.pop(_RETRYABLE_KEY, False):
                dropped = replayable
            if not dropped:
                await send(message)

        scope[_ATTEMPT_KEY] = 1
        await self.app(scope, recording_receive, dropping_send)
        if not dropped:
            return
        logger.info(
            "running %s %s again after a transient database error",
            scope.get("method"),
            scope.get("path"),
        )
        replay = deque(recorded)

        async def replaying_receive() -> Message:
            return replay.popleft() if replay else await receive()

        scope[_ATTEMPT_KEY] = 2
        scope.pop(_RETRYABLE_KEY, None)
        await self.app(scope, replaying_receive, send)
