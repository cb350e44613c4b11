"""Job counts kept in Redis, so the API's /metrics shows the jobs of every worker.

ARQ workers serve no HTTP, and there may be many of them: each run adds one to
`<function>|<outcome>` in a hash (and its duration to another), and /metrics reads both
when it is scraped. Counting is best effort: a Redis error never fails a job.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

RUNS_KEY = "metrics:jobs:runs"
SECONDS_KEY = "metrics:jobs:seconds"


async def record(redis: Redis, function: str, outcome: str, seconds: float) -> None:
    try:
        async with redis.pipeline(transaction=False) as pipe:
            pipe.hincrby(RUNS_KEY, f"{function}|{outcome}", 1)
            pipe.hincrbyfloat(SECONDS_KEY, function, seconds)
            await pipe.execute()
    except (RedisError, OSError) as exc:
        logger.warning("job metrics not recorded: %s", exc)


@dataclass(frozen=True, slots=True)
class JobCounts:
    runs: dict[tuple[str, str], int]  # (function, outcome) -> runs
    seconds: dict[str, float]  # function -> total duration


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def read(redis: Redis) -> JobCounts:
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(RUNS_KEY)
        pipe.hgetall(SECONDS_KEY)
        runs, seconds = await pipe.execute()
    return JobCounts(
        runs={
            tuple(_text(key).rsplit("|", 1)): int(value)  # type: ignore[misc]
            for key, value in runs.items()
        },
        seconds={_text(key): float(value) for key, value in seconds.items()},
    )
