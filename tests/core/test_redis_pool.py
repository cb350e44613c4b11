"""A burst of requests larger than the Redis pool waits for connections; no 503."""

from __future__ import annotations

import asyncio
from collections import Counter

from app.core.config import RedisSettings, Settings
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
