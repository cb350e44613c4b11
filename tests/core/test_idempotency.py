"""The claim an `Idempotency-Key` holds while its request runs: renewed while the
request lives, and never overwritten or freed by a request that no longer owns it."""

from __future__ import annotations

import asyncio
import json

import pytest
from redis.asyncio import Redis
from starlette.responses import Response

from app.core import idempotency
from app.core.errors import Conflict
from app.core.idempotency import Idempotency


def _claim(redis: Redis, key: str = "k-1") -> Idempotency:
    return Idempotency(redis, scope="user-1", key=key, fingerprint="f")


async def test_a_slow_request_keeps_its_claim(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(idempotency, "IN_FLIGHT_TTL_SECONDS", 1)
    monkeypatch.setattr(idempotency, "RENEW_EVERY_SECONDS", 0.2)
    slow = _claim(redis)
    await slow.begin()
    await asyncio.sleep(1.6)  # past the claim's TTL: only renewal keeps it
    retry = _claim(redis)
    with pytest.raises(Conflict):
        await retry.begin()
    await slow.release()
    assert await redis.keys("idempotency:*") == []


@pytest.mark.parametrize("ending", ["store", "release"])
async def test_a_lapsed_claim_taken_by_another_request_is_left_alone(
    redis: Redis, ending: str
) -> None:
    first = _claim(redis)
    await first.begin()
    [key] = await redis.keys("idempotency:*")
    await redis.delete(key)  # the first request's claim lapsed (a stalled process)
    second = _claim(redis)
    await second.begin()
    taken = await redis.get(key)
    if ending == "store":  # the first one commits: its response must not replace the claim
        first.response = Response(b"{}", status_code=201, media_type="application/json")
        await first.store()
    else:  # it rolls back: it must not free the second one's claim
        await first.release()
    assert await redis.get(key) == taken
    assert json.loads(taken)["state"] == "in_flight"
    await second.release()
    assert await redis.get(key) is None
