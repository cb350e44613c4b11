"""A burst of requests larger than the Redis pool waits for connections, no 503; the
wait is first come, first served (app.core.pool.FairRedisPool)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError

from app.core.config import RedisSettings, Settings
from app.core.pool import FairRedisPool
from tests.conftest import app_client


async def test_a_burst_beyond_the_redis_pool_waits_instead_of_failing(
    settings: Settings,
) -> None:
    small = settings.model_copy(
        update={"redis": RedisSettings(_env_file=None, url=settings.redis.url, max_connections=3)}
    )
    async with app_client(small) as http:
        # Each request spends the anonymous rate-limit budget in Redis, then is a 401.
        responses = await asyncio.gather(*(http.get("/api/v1/items") for _ in range(60)))
    assert Counter(response.status_code for response in responses) == {401: 60}


@pytest_asyncio.fixture
async def one_connection(settings: Settings) -> AsyncIterator[FairRedisPool]:
    pool = FairRedisPool.from_url(settings.redis.url, max_connections=1, timeout=5)
    yield pool
    await pool.aclose()


def _checkout(pool: FairRedisPool) -> asyncio.Task[AbstractConnection]:
    return asyncio.create_task(pool.get_connection())


async def test_a_released_connection_goes_to_the_longest_waiting_command(
    one_connection: FairRedisPool,
) -> None:
    pool = one_connection
    held = await pool.get_connection()
    first = _checkout(pool)
    await asyncio.sleep(0.01)  # waiting: the only connection is busy
    # A newcomer is about to run when the connection comes back, before `first` resumes:
    # redis-py's BlockingConnectionPool lets it take the connection, and `first` waits
    # again (for as long as newcomers keep coming: the 2 s timeouts of make bench).
    newcomer = _checkout(pool)
    await pool.release(held)
    assert await first is held
    await asyncio.sleep(0.01)
    assert not newcomer.done()
    await pool.release(held)
    assert await newcomer is held
    await pool.release(held)


async def test_a_command_gives_up_after_the_timeout_and_nothing_is_lost(
    settings: Settings,
) -> None:
    pool = FairRedisPool.from_url(settings.redis.url, max_connections=1, timeout=0.05)
    try:
        held = await pool.get_connection()
        with pytest.raises(RedisConnectionError, match="No connection available"):
            await pool.get_connection()
        await pool.release(held)
        # The connection is idle again, and works.
        again = await pool.get_connection()
        assert again is held
        await again.send_command("PING")
        assert await again.read_response() in {"PONG", b"PONG"}
        await pool.release(again)
    finally:
        await pool.aclose()


async def test_a_connection_handed_to_a_command_that_gave_up_goes_to_the_next(
    one_connection: FairRedisPool,
) -> None:
    pool = one_connection
    held = await pool.get_connection()
    leaving = _checkout(pool)
    await asyncio.sleep(0.01)
    staying = _checkout(pool)
    await asyncio.sleep(0.01)
    await pool.release(held)  # handed to `leaving`, which is cancelled before it runs
    leaving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leaving
    assert await staying is held
    await pool.release(held)
