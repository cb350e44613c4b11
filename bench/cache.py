"""Does the Redis cache of GET /items/{id} pay? The same wrk load with it and without.

One API process (rate limits off), one user with 100 items; wrk reads them in turn
with 64 connections for 10 s after a 3 s warm-up, once with ITEM_CACHE_SECONDS=60 and
once with 0.

    uv run python -m bench.cache
"""

from __future__ import annotations

import asyncio
from uuid import UUID

from app.bootstrap import seed_demo_data
from bench import wrk
from bench.common import (
    bench_env,
    demo_token_and_items,
    free_port,
    fresh_database,
    load_average,
    settings_from,
    spawn,
    stop,
    wait_for_http,
)


async def _seed(env: dict[str, str]) -> tuple[str, list[UUID]]:
    settings = settings_from(env)
    await fresh_database(settings)
    await seed_demo_data(settings, users=1, items_per_user=100)
    return await demo_token_and_items(settings, hours=1)


def measure() -> None:
    wrk.require_wrk()
    env = bench_env(RATE_LIMIT_ENABLED="false")
    token, items = asyncio.run(_seed(env))
    script = wrk.lua_script(
        headers={"Authorization": f"Bearer {token}"},
        paths=[f"/api/v1/items/{item_id}" for item_id in items],
    )
    print(f"load average {load_average():.2f}")  # noqa: T201
    for seconds in ("60", "0"):
        port = free_port()
        server = spawn(["serve", "--port", str(port)], env | {"ITEM_CACHE_SECONDS": seconds})
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for_http(f"{url}/health/live")
            wrk.run(url, script, connections=64, seconds=3)  # warm-up, fills the cache
            result = wrk.run(url, script, connections=64, seconds=10)
        finally:
            stop(server)
        label = "cache on " if seconds != "0" else "cache off"
        print(  # noqa: T201
            f"GET /items/{{id}}, {label}: {result.requests_per_second:7.0f} req/s, "
            f"p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms, "
            f"non-2xx {result.non_2xx}"
        )


if __name__ == "__main__":
    measure()
