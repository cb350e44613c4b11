"""Resuming reads every kept event, not only the oldest page of them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from redis.asyncio import Redis

from app.auth.credentials import Credential
from app.core.config import RealtimeSettings, Settings
from app.core.events import user_stream_key
from app.core.ids import uuid7
from app.realtime.hub import EventHub, Subscription


async def _nothing_revoked(credentials: object) -> set[Credential]:
    return set()


async def test_a_resume_gets_every_kept_event_after_its_last_one(
    settings: Settings, redis: Redis
) -> None:
    # Trimming is approximate (MAXLEN ~), so a stream may hold more than its nominal
    # size: a resume must get all of it, in order, and the newest above all.
    realtime = RealtimeSettings(_env_file=None, history_size=300)
    hub = EventHub(
        redis, settings.model_copy(update={"realtime": realtime}), revoked=_nothing_revoked
    )
    user_id = uuid7()
    async with redis.pipeline(transaction=False) as pipe:
        for number in range(1200):
            pipe.xadd(
                user_stream_key(user_id),
                {
                    "type": "item.updated",
                    "ts": "2026-11-24T00:00:00.000+00:00",
                    "data": str(number),
                },
            )
        ids = await pipe.execute()
    subscription = Subscription(
        Credential(user_id), capacity=10, expires_at=datetime.now(UTC) + timedelta(minutes=5)
    )
    resumed = await hub.history(subscription, ids[599])
    assert [envelope.id for envelope in resumed] == ids[600:]
