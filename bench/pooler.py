"""What a transaction-mode PgBouncer costs: GET /api/v1/items/{id} straight to
PostgreSQL and through PgBouncer (`DATABASE_PGBOUNCER=true`), in one run.

One API process (rate limits off, every other setting the default), one user with 100
items; wrk reads them in turn with 64 connections for 10 s after a 3 s warm-up. Each
way is measured with the item cache on (the default: most reads never reach
PostgreSQL) and off (`ITEM_CACHE_SECONDS=0`: every read is a query). PgBouncer runs
with a server pool of 10, the API's DATABASE_POOL_SIZE.

    uv run python -m bench.pooler
"""

from __future__ import annotations

import asyncio

from bench import wrk
from bench.cache import _seed
from bench.common import bench_env, free_port, load_average, spawn, stop, wait_for_http
from bench.pgbouncer import pgbouncer


def measure() -> None:
    wrk.require_wrk()
    env = bench_env(RATE_LIMIT_ENABLED="false")
    token, items = asyncio.run(_seed(env))
    script = wrk.lua_script(
        headers={"Authorization": f"Bearer {token}"},
        paths=[f"/api/v1/items/{item_id}" for item_id in items],
    )
    print(f"load average {load_average():.2f}")  # noqa: T201
    with pgbouncer(pool_size=10) as bouncer:
        ways = {
            "direct    ": {},
            "pgbouncer ": {
                "DATABASE_URL": bouncer.url(env["DATABASE_URL"]),
                "DATABASE_PGBOUNCER": "true",
            },
        }
        rates: dict[tuple[str, str], float] = {}
        for cache in ("60", "0"):
            for label, extra in ways.items():
                port = free_port()
                server = spawn(
                    ["serve", "--port", str(port)], env | extra | {"ITEM_CACHE_SECONDS": cache}
                )
                url = f"http://127.0.0.1:{port}"
                try:
                    wait_for_http(f"{url}/health/live")
                    wrk.run(url, script, connections=64, seconds=3)
                    result = wrk.run(url, script, connections=64, seconds=10)
                finally:
                    stop(server)
                state = "cache on " if cache != "0" else "cache off"
                rates[(label, state)] = result.requests_per_second
                print(  # noqa: T201
                    f"GET /items/{{id}}, {state}, {label}: "
                    f"{result.requests_per_second:7.0f} req/s, p50 {result.p50_ms:.1f} ms, "
                    f"p99 {result.p99_ms:.1f} ms, non-2xx {result.non_2xx}"
                )
            ratio = rates[("pgbouncer ", state)] / rates[("direct    ", state)]
            print(f"  pgbouncer / direct, {state}: {ratio:.2f}")  # noqa: T201


if __name__ == "__main__":
    measure()
