"""Failing fast while PostgreSQL does not answer.

A server that has crashed refuses connections at once, but one that hangs (a frozen VM,
a stalled disk, a network partition) answers nothing: every request would wait out the
client-side timeouts (`DATABASE_CONNECT_TIMEOUT`, and `DATABASE_STATEMENT_TIMEOUT_MS`
plus a margin) while the pool fills with requests doing the same. So the first timeout
opens the circuit: for `DATABASE_BREAKER_COOLDOWN_SECONDS` every request that needs a
connection gets `DatabaseUnavailable` (a 503) at once. Then one request at a time is let
through to try; the first answer from the server (a new connection, a statement that
completes) closes the circuit again, a failure reopens it.

`app.core.pool` puts the breaker in front of every pool checkout and wires it to the
engine events that see connections being made and statements completing or failing."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sqlalchemy.exc import DBAPIError

logger = logging.getLogger(__name__)

# SQLSTATEs of a server that cannot serve anyone for now: shutting down (57P01, 57P02),
# starting up or recovering from a crash (57P03), out of connection slots (53300).
UNAVAILABLE_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "53300"})


class DatabaseUnavailable(ConnectionError):
    """PostgreSQL did not answer moments ago; not asked again until the cooldown ends."""


def is_unreachable(exc: BaseException) -> bool:
    """True for a failure that says the server cannot be reached or does not answer, as
    opposed to one about the statement (a constraint, a bad value, a canceled query)."""
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        exc = exc.orig if isinstance(exc.orig, BaseException) else exc
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str):
        return sqlstate in UNAVAILABLE_SQLSTATES or sqlstate.startswith("08")
    return isinstance(exc, TimeoutError | OSError) and not isinstance(exc, DatabaseUnavailable)


class Breaker:
    """Closed (everything passes) until `failed()`; then open for `cooldown` seconds
    (`before()` raises); then half-open: one caller at a time passes, and its
    `succeeded()` closes the circuit, its `failed()` opens it again."""

    def __init__(self, cooldown: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.cooldown = cooldown
        self._clock = clock
        self._open_until: float | None = None  # None: closed
        self._trial_until = 0.0  # a half-open trial is running until then

    @property
    def is_open(self) -> bool:
        return self._open_until is not None

    def before(self) -> None:
        if self._open_until is None:
            return
        now = self._clock()
        if now < self._open_until or now < self._trial_until:
            msg = "the database did not answer moments ago"
            raise DatabaseUnavailable(msg)
        # Half-open: this caller tries. Should it never report back (cancelled), the
        # next one may try after another cooldown.
        self._trial_until = now + self.cooldown

    def raise_if_open(self) -> None:
        """Like `before()`, but lets the half-open trial (and only it, as `before()`
        holds the others back) through."""
        if self._open_until is not None and self._clock() < self._open_until:
            msg = "the database did not answer moments ago"
            raise DatabaseUnavailable(msg)

    def succeeded(self) -> None:
        if self._open_until is None:
            return
        logger.warning("database answers again: circuit closed")
        self._open_until = None
        self._trial_until = 0.0

    def failed(self) -> None:
        if self._open_until is None:
            logger.warning("database does not answer: failing fast for %.1f s", self.cooldown)
        self._open_until = self._clock() + self.cooldown
        self._trial_until = 0.0


_POOLER_HINT = "a transaction-mode pooler is in the way: set DATABASE_PGBOUNCER=true"


def pooler_hint(exc: BaseException) -> str | None:
    """What to do when `exc` says PostgreSQL is reached through a transaction-mode
    pooler (PgBouncer and the like) that the settings do not expect."""
    text = str(exc)
    if "unsupported startup parameter" in text:
        return _POOLER_HINT
    if "prepared statement" in text and ("does not exist" in text or "already exists" in text):
        return _POOLER_HINT
    return None
