"""One per API process: tails the event bus and hands each event to this process's
WebSocket and SSE subscriptions.

- Fan-out never waits for a client: each subscription has a bounded buffer; one that
  fills up (a client that does not read) is closed as too slow, and everyone else goes
  on.
- The per-user connection limit holds across processes: every subscription holds a
  lease in a Redis sorted set (`realtime:connections:<user>`), renewed while it lives,
  so the leases of a crashed process lapse by themselves.
- `drain()` closes every subscription as "going away" (WebSocket 1001, end of the SSE
  stream) and refuses new ones; the server calls it when it is told to stop.
- Every `REALTIME_RECHECK_SECONDS` the credentials of the open subscriptions are checked
  again (`revoked`, given by the app), and those no longer standing are closed: a
  deleted key, a logged-out or outdated token, a deactivated account.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from datetime import UTC, datetime
from enum import StrEnum
from uuid import UUID

from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.auth.credentials import Credential
from app.core.config import Settings
from app.core.events import BUS_KEY, Envelope, user_stream_key
from app.core.ids import uuid7
from app.core.observability import REDIS_ERRORS
from app.core.resources import build_redis

logger = logging.getLogger(__name__)

BLOCK_MS = 5000
LEASE_SECONDS = 60
LEASE_RENEW_SECONDS = 20
HISTORY_PAGE = 500

# KEYS: the user's leases. ARGV: now (ms), limit, expiry (ms), connection id, key ttl (ms).
_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
    return 0
end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""


def _leases_key(user_id: UUID) -> str:
    return f"realtime:connections:{user_id}"


def stream_position(event_id: str) -> tuple[int, int]:
    milliseconds, _, sequence = event_id.partition("-")
    return int(milliseconds), int(sequence or 0)


class CloseReason(StrEnum):
    going_away = "going_away"  # the server is shutting down
    too_slow = "too_slow"  # the client did not keep up
    expired = "expired"  # the access token it was opened with expired
    revoked = "revoked"  # its credential no longer stands (deleted key, logout...)


class Draining(Exception):
    """The process is shutting down and takes no new subscriptions."""


class ConnectionLimitReached(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"at most {limit} realtime connections per user")
        self.limit = limit


class Subscription:
    """The events of one connection: its user's, or every user's (`everything`), until
    `expires_at` (the access token's expiry: the client reconnects with a fresh one)."""

    def __init__(self, credential: Credential, *, capacity: int, expires_at: datetime) -> None:
        self.id = uuid7().hex
        self.credential = credential
        self.user_id = credential.user_id
        self.everything = credential.everything
        self.expires_at = expires_at
        self.reason: CloseReason | None = None
        self._capacity = capacity
        self._pending: deque[Envelope] = deque()
        self._ready = asyncio.Event()

    def deliver(self, envelope: Envelope) -> None:
        if self.reason is not None:
            return
        if len(self._pending) >= self._capacity:
            self.close(CloseReason.too_slow)
            return
        self._pending.append(envelope)
        self._ready.set()

    def close(self, reason: CloseReason) -> None:
        if self.reason is None:
            self.reason = reason
            self._ready.set()

    async def next(self) -> Envelope | None:
        """The next event, or None once the subscription is closed (or expired)."""
        while True:
            if self.reason is not None:
                return None
            if self._pending:
                return self._pending.popleft()
            self._ready.clear()
            remaining = (self.expires_at - datetime.now(UTC)).total_seconds()
            try:
                async with asyncio.timeout(max(remaining, 0)):
                    await self._ready.wait()
            except TimeoutError:
                self.close(CloseReason.expired)


Revoked = Callable[[Iterable[Credential]], Awaitable[set[Credential]]]


class EventHub:
    def __init__(self, redis: Redis, settings: Settings, *, revoked: Revoked) -> None:
        self._redis = redis  # the shared client: leases and history reads
        self._revoked = revoked
        self._settings = settings
        self._limits = settings.realtime
        self._acquire = redis.register_script(_ACQUIRE)
        self._by_user: dict[UUID, set[Subscription]] = {}
        self._everything: set[Subscription] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._draining = False
        self._stopping = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[EventHub]:
        # A client of its own: XREAD blocks for seconds, longer than the shared pool's
        # socket timeout allows.
        listener = build_redis(self._settings, socket_timeout=BLOCK_MS / 1000 + 5)
        self._tasks = [
            asyncio.create_task(self._listen(listener), name="events-listener"),
            asyncio.create_task(self._renew_leases(), name="events-leases"),
            asyncio.create_task(self._recheck_credentials(), name="events-credentials"),
        ]
        try:
            yield self
        finally:
            for subscription in self._subscriptions():
                subscription.close(CloseReason.going_away)
            await self._stop(listener)

    async def _stop(self, listener: Redis) -> None:
        # Closing the listener's connection ends its blocking XREAD at once. Cancelling
        # the task alone is not enough: a cancellation that lands while redis-py's read
        # timeout is being armed can be swallowed (Python 3.11), leaving the task
        # blocked until the next event.
        self._stopping.set()
        for task in self._tasks:
            task.cancel()
        await listener.aclose(close_connection_pool=True)
        async with asyncio.timeout(BLOCK_MS / 1000 + 1):
            await asyncio.gather(*self._tasks, return_exceptions=True)

    @property
    def connections(self) -> int:
        return sum(len(subs) for subs in self._by_user.values()) + len(self._everything)

    def _subscriptions(self) -> list[Subscription]:
        return [*self._everything, *(s for subs in self._by_user.values() for s in subs)]

    async def subscribe(self, credential: Credential, *, expires_at: datetime) -> Subscription:
        """Register a subscription; `Draining` or `ConnectionLimitReached` when refused."""
        if self._draining:
            raise Draining
        user_id = credential.user_id
        subscription = Subscription(
            credential, capacity=self._limits.client_buffer, expires_at=expires_at
        )
        now = int(time.time() * 1000)
        acquired = await self._acquire(
            keys=[_leases_key(user_id)],
            args=[
                now,
                self._limits.max_connections_per_user,
                now + LEASE_SECONDS * 1000,
                subscription.id,
                LEASE_SECONDS * 1000,
            ],
        )
        if not acquired:
            raise ConnectionLimitReached(self._limits.max_connections_per_user)
        if credential.everything:
            self._everything.add(subscription)
        else:
            self._by_user.setdefault(user_id, set()).add(subscription)
        self._idle.clear()
        return subscription

    async def unsubscribe(self, subscription: Subscription) -> None:
        subscription.close(CloseReason.going_away)
        if subscription.everything:
            self._everything.discard(subscription)
        else:
            subs = self._by_user.get(subscription.user_id, set())
            subs.discard(subscription)
            if not subs:
                self._by_user.pop(subscription.user_id, None)
        if not self.connections:
            self._idle.set()
        try:
            await self._redis.zrem(_leases_key(subscription.user_id), subscription.id)
        except (RedisError, OSError) as exc:  # the lease lapses by itself
            logger.warning("could not release a connection lease: %s", exc)

    async def drain(self) -> None:
        """Close every subscription as going away, refuse new ones, and wait (up to the
        drain timeout) until their connections have said goodbye."""
        self._draining = True
        subscriptions = self._subscriptions()
        for subscription in subscriptions:
            subscription.close(CloseReason.going_away)
        if subscriptions:
            logger.info("closing %d realtime connections", len(subscriptions))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._limits.drain_timeout_seconds):
                await self._idle.wait()

    async def history(self, subscription: Subscription, after: str) -> list[Envelope]:
        """Every kept event after event `after`, oldest first. The streams are trimmed
        approximately, so they may keep more than their nominal size: all of it is read,
        a page at a time (up to twice the size), never just the oldest page."""
        if subscription.everything:
            key, size = BUS_KEY, self._limits.bus_size
        else:
            key, size = user_stream_key(subscription.user_id), self._limits.history_size
        envelopes: list[Envelope] = []
        start = after
        while len(envelopes) < 2 * size:
            page = await self._redis.xrange(key, min=f"({start}", max="+", count=HISTORY_PAGE)
            envelopes += [Envelope.render(event_id, fields) for event_id, fields in page]
            if len(page) < HISTORY_PAGE:
                break
            start = page[-1][0]
        return envelopes

    async def follow(
        self, subscription: Subscription, after: str | None
    ) -> AsyncIterator[Envelope]:
        """The events after `after` (from the history), then live ones, each once, until
        the subscription closes."""
        last = stream_position(after) if after else (0, 0)
        if after is not None:
            for past in await self.history(subscription, after):
                last = stream_position(past.id)
                yield past
        while (live := await subscription.next()) is not None:
            position = stream_position(live.id)
            if position > last:  # the history may already have held it
                last = position
                yield live

    def _dispatch(self, event_id: str, fields: dict[str, str]) -> None:
        try:
            user_id = UUID(fields["user"])
        except (KeyError, ValueError):
            logger.warning("malformed event %s on the bus", event_id)
            return
        targets = self._by_user.get(user_id)
        if not targets and not self._everything:
            return
        envelope = Envelope.render(event_id, fields)
        for subscription in [*(targets or ()), *self._everything]:
            subscription.deliver(envelope)

    async def _listen(self, redis: Redis) -> None:
        last = "$"
        while not self._stopping.is_set():
            try:
                batches = await redis.xread({BUS_KEY: last}, block=BLOCK_MS, count=500)
            except (RedisError, OSError) as exc:
                if self._stopping.is_set():
                    return
                REDIS_ERRORS.labels("events-bus").inc()
                logger.warning("event bus unreachable (%s); retrying", exc)
                await asyncio.sleep(1)
                continue
            for _, entries in batches:
                for event_id, fields in entries:
                    last = event_id
                    try:
                        self._dispatch(event_id, fields)
                    except Exception:  # one bad event must not stop the fan-out
                        logger.exception("could not dispatch event %s", event_id)

    async def _renew_leases(self) -> None:
        while True:
            await asyncio.sleep(LEASE_RENEW_SECONDS)
            subscriptions = self._subscriptions()
            if not subscriptions:
                continue
            expiry = int(time.time() * 1000) + LEASE_SECONDS * 1000
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for subscription in subscriptions:
                        key = _leases_key(subscription.user_id)
                        pipe.zadd(key, {subscription.id: expiry}, xx=True)
                        pipe.pexpire(key, LEASE_SECONDS * 1000)
                    await pipe.execute()
            except (RedisError, OSError) as exc:
                REDIS_ERRORS.labels("connection-leases").inc()
                logger.warning("could not renew connection leases: %s", exc)

    async def _recheck_credentials(self) -> None:
        while True:
            await asyncio.sleep(self._limits.recheck_seconds)
            subscriptions = self._subscriptions()
            if not subscriptions:
                continue
            try:
                gone = await self._revoked({s.credential for s in subscriptions})
            except Exception:  # a database or Redis outage: keep them, check again later
                logger.warning("could not recheck realtime credentials", exc_info=True)
                continue
            for subscription in subscriptions:
                if subscription.credential in gone:
                    subscription.close(CloseReason.revoked)
            if gone:
                logger.info("closed realtime connections of %d revoked credentials", len(gone))
