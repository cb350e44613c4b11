"""The HTTP benchmark (`make bench`): the API against the limit of its own stack.

One run, one table. Three servers start with the same flags (one uvicorn process,
uvloop, httptools, no access log): the API (`python -m app serve`, rate limits off, as
a load test needs), R1 and R2 (`bench/reference.py`). For each endpoint and each
connection count, wrk runs `--runs` times (the reference and the API in turn, so drift
hits both alike) after a warm-up; the table shows the medians, the API's RSS after
everything, and the ratio to the reference where there is one.

The login storm: wrk logs in as fast as it can (64 connections, the configured argon2
parameters) while a light probe (4 connections) reads `/health/live`; its p99 is
compared with the same probe's p99 on the idle server. A second storm runs beside a
probe of `GET /users/me`, which needs a pooled database connection.

    uv run python -m bench.http                       # make bench
    uv run python -m bench.http --seconds 5 --runs 1  # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen
from uuid import UUID

import httpx

from app.bootstrap import DEMO_PASSWORD, seed_demo_data
from app.core.config import Settings
from app.core.resources import Resources
from bench import wrk
from bench.common import (
    bench_env,
    demo_token_and_items,
    free_port,
    fresh_database,
    load_average,
    rss_mib,
    settings_from,
    spawn,
    stop,
    wait_for_http,
)

ITEMS = 100
LOGIN_ACCOUNTS = 400  # the storm rotates through them: no account is in flight twice
IDLE_LOAD = 0.5  # per core
COOL_DOWN_SECONDS = 6


@dataclass(frozen=True)
class Server:
    name: str
    process: Popen[bytes]
    url: str


@dataclass(frozen=True)
class Case:
    label: str
    path: str
    script: Path
    reference: Server | None = None
    read: bool = True


@dataclass(frozen=True)
class Row:
    label: str
    connections: int
    api: wrk.WrkResult
    reference: wrk.WrkResult | None
    read: bool


def _median(results: list[wrk.WrkResult]) -> wrk.WrkResult:
    """The run with the median throughput, its latencies and errors summed over runs."""
    ordered = sorted(results, key=lambda result: result.requests_per_second)
    middle = ordered[len(ordered) // 2]
    return wrk.WrkResult(
        requests_per_second=middle.requests_per_second,
        p50_ms=statistics.median(result.p50_ms for result in results),
        p99_ms=statistics.median(result.p99_ms for result in results),
        requests=sum(result.requests for result in results),
        non_2xx=sum(result.non_2xx for result in results),
        socket_errors=sum(result.socket_errors for result in results),
        statuses=dict(sum((Counter(result.statuses) for result in results), Counter())),
    )


def _errors(result: wrk.WrkResult) -> str:
    """`13 (503: 13)`: how many, and which statuses."""
    if not result.non_2xx:
        return "0"
    by_status = ", ".join(f"{status}: {count}" for status, count in sorted(result.statuses.items()))
    return f"{result.non_2xx} ({by_status})"


def _wait_until_idle(cores: int) -> None:
    """Print the load average; wait up to a minute for it to drop below IDLE_LOAD/core."""
    deadline = time.monotonic() + 60
    while (load := load_average()) > IDLE_LOAD * cores and time.monotonic() < deadline:
        time.sleep(5)
    verdict = "idle" if load <= IDLE_LOAD * cores else "NOT idle: numbers will be low"
    print(f"load average {load:.2f} on {cores} cores ({verdict})")  # noqa: T201


async def _seed(settings: Settings) -> tuple[str, list[UUID]]:
    await fresh_database(settings)
    await seed_demo_data(settings, users=2, items_per_user=ITEMS)
    await seed_demo_data(settings, users=LOGIN_ACCOUNTS, items_per_user=0)
    token, items = await demo_token_and_items(settings)
    async with Resources.open(settings) as resources:
        await resources.redis.flushdb()
    return token, items


API_LOG = Path(tempfile.gettempdir()) / "bench-http-api.log"


def _start(name: str, args: list[str], env: dict[str, str], log_to: Path | None = None) -> Server:
    port = free_port()
    process = spawn([*args, "--port", str(port)], env, log_to=log_to)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/health/live", within=30)  # R2 answers it 404: up all the same
    except TimeoutError:
        stop(process, grace=1)
        raise
    return Server(name, process, url)


def _same_body(api: Server, reference: Server, path: str, token: str) -> None:
    """R2 must answer what the API answers, or the comparison means nothing."""
    headers = {"Authorization": f"Bearer {token}"}
    ours = httpx.get(f"{api.url}{path}", headers=headers)
    theirs = httpx.get(f"{reference.url}{path}", headers=headers)
    assert ours.status_code == theirs.status_code == 200, (ours.text, theirs.text)
    assert ours.json() == theirs.json(), (ours.json(), theirs.json())
    assert ours.headers["etag"] == theirs.headers["etag"]


def _run(server: Server, case: Case, connections: int, seconds: int) -> wrk.WrkResult:
    return wrk.run(
        f"{server.url}{case.path}", case.script, connections=connections, seconds=seconds
    )


def _measure(
    api: Server, cases: list[Case], *, connections: list[int], seconds: int, runs: int
) -> list[Row]:
    rows = []
    for case in cases:
        for count in connections:
            servers = [api] if case.reference is None else [case.reference, api]
            for server in servers:  # warm-up: connections, caches, JIT-free but still
                wrk.run(f"{server.url}{case.path}", case.script, connections=count, seconds=2)
            results: dict[str, list[wrk.WrkResult]] = {server.name: [] for server in servers}
            for _ in range(runs):
                for server in servers:
                    results[server.name].append(_run(server, case, count, seconds))
            reference = _median(results[case.reference.name]) if case.reference else None
            rows.append(Row(case.label, count, _median(results[api.name]), reference, case.read))
            print(f"  measured {case.label} at {count} connections", flush=True)  # noqa: T201
            # Requests whose connection wrk gave up on (2 s) still run, or wait for a pool
            # (5 s at most): let them drain, so they do not weigh on the next case.
            time.sleep(COOL_DOWN_SECONDS)
    return rows


def _storm_with_probe(
    api: Server, probe_path: str, probe: Path, *, seconds: int
) -> tuple[wrk.WrkResult, wrk.WrkResult, wrk.WrkResult]:
    """The probe on the idle server, then the login storm with the probe beside it:
    (idle probe, storm, probe during the storm)."""
    url = f"{api.url}{probe_path}"
    idle = wrk.run(url, probe, connections=4, seconds=seconds, threads=1)
    login = wrk.lua_script(
        method="POST",
        forms=[
            {"username": f"demo-{n}@example.com", "password": DEMO_PASSWORD}
            for n in range(LOGIN_ACCOUNTS)
        ],
    )
    with ThreadPoolExecutor(2) as pool:
        storm_future = pool.submit(
            wrk.run, f"{api.url}/api/v1/auth/token", login, connections=64, seconds=seconds
        )
        time.sleep(1)  # let the storm start before the probe measures
        busy = pool.submit(wrk.run, url, probe, connections=4, seconds=seconds - 2, threads=1)
        return idle, storm_future.result(), busy.result()


def _login_storm(api: Server, token: str, *, seconds: int, cores: int) -> list[str]:
    idle, storm, during = _storm_with_probe(api, "/health/live", wrk.lua_script(), seconds=seconds)
    per_core = storm.requests_per_second / cores
    lines = [
        f"login storm (64 connections, argon2 as configured): {storm.requests_per_second:.1f} "
        f"logins/s = {per_core:.1f} verifications/s per core; p50 {storm.p50_ms:.0f} ms, "
        f"p99 {storm.p99_ms:.0f} ms, non-2xx {_errors(storm)}, socket errors {storm.socket_errors}",
        f"/health/live p99 with 4 probe connections: idle {idle.p99_ms:.2f} ms, during the "
        f"storm {during.p99_ms:.2f} ms ({during.p99_ms / idle.p99_ms:.1f}x)",
        f"API RSS after the storm: {rss_mib(api.process.pid):.1f} MiB",
    ]
    # A route that needs the database, during a second storm: logins must not hold the
    # pool's connections while they wait for argon2.
    me = wrk.lua_script(headers={"Authorization": f"Bearer {token}"})
    idle, _, during = _storm_with_probe(api, "/api/v1/users/me", me, seconds=seconds)
    lines.append(
        f"GET /users/me with 4 probe connections: idle {idle.requests_per_second:,.0f} req/s, "
        f"p99 {idle.p99_ms:.1f} ms; during a storm {during.requests_per_second:,.0f} req/s, "
        f"p99 {during.p99_ms:.1f} ms, non-2xx {_errors(during)}"
    )
    return lines


def _table(rows: list[Row], rss: float) -> str:
    lines = [
        "| endpoint | conns | req/s | p50 ms | p99 ms | p99/p50 | non-2xx | socket errors"
        " | reference req/s | reference p99 ms | ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        api = row.api
        reference = row.reference
        lines.append(
            f"| {row.label} | {row.connections} | {api.requests_per_second:,.0f} | "
            f"{api.p50_ms:.1f} | {api.p99_ms:.1f} | {api.p99_ms / api.p50_ms:.1f} | "
            f"{_errors(api)} | {api.socket_errors} | "
            + (
                f"{reference.requests_per_second:,.0f} | {reference.p99_ms:.1f} | "
                f"{api.requests_per_second / reference.requests_per_second:.2f} |"
                if reference
                else "- | - | - |"
            )
        )
    lines.append(f"\nAPI RSS after the run: {rss:.1f} MiB")
    return "\n".join(lines)


def main(seconds: int, runs: int, connections: list[int], only: list[str]) -> None:
    wrk.require_wrk()
    cores = os.cpu_count() or 1
    # Rate limits off, and the per-address login limit raised: the storm comes from one
    # address, which is exactly what that limit exists to stop, and it measures hashing.
    env = bench_env(RATE_LIMIT_ENABLED="false", LOGIN_MAX_FAILURES_PER_ADDRESS="100000")
    settings = settings_from(env)
    token, items = asyncio.run(_seed(settings))
    _wait_until_idle(cores)
    bearer = {"Authorization": f"Bearer {token}"}
    item_paths = [f"/api/v1/items/{item_id}" for item_id in items]
    servers: list[Server] = []
    try:
        API_LOG.unlink(missing_ok=True)
        api = _start("API", ["serve"], env, log_to=API_LOG)
        servers.append(api)
        r1 = _start("R1", ["-m", "bench.reference", "r1"], env)
        servers.append(r1)
        r2 = _start("R2", ["-m", "bench.reference", "r2"], env)
        servers.append(r2)
        _same_body(api, r2, item_paths[0], token)
        script: Callable[..., Path] = wrk.lua_script
        cases = [
            Case("GET /health/live", "/health/live", script(), reference=r1),
            Case("GET /items/{id}", item_paths[0], script(headers=bearer, paths=item_paths), r2),
            Case("GET /items?limit=20", "/api/v1/items?limit=20", script(headers=bearer)),
            Case("GET /users/me", "/api/v1/users/me", script(headers=bearer)),
            Case(
                "POST /items",
                "/api/v1/items",
                script(
                    headers=bearer, method="POST", body={"title": "Bench lamp", "price": "9.99"}
                ),
                read=False,
            ),
        ]
        if only:
            cases = [case for case in cases if any(word in case.label for word in only)]
        rows = _measure(api, cases, connections=connections, seconds=seconds, runs=runs)
        rss = rss_mib(api.process.pid)
        storm = _login_storm(api, token, seconds=max(seconds, 10), cores=cores)
    finally:
        for server in servers:
            stop(server.process)
    print()  # noqa: T201
    print(  # noqa: T201
        f"{cores} cores; wrk -t2, {seconds} s per run, median of {runs}; rate limits off"
    )
    print(_table(rows, rss))  # noqa: T201
    print(f"API log (warnings and errors): {API_LOG}")  # noqa: T201
    for line in storm:
        print(line)  # noqa: T201
    worst = [
        f"{row.label} at {row.connections}"
        for row in rows
        if row.read and row.connections == max(connections) and row.api.p99_ms > 4 * row.api.p50_ms
    ]
    print("reads with p99 > 4 x p50 at the most connections:", ", ".join(worst) or "none")  # noqa: T201


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="per wrk run")
    parser.add_argument("--runs", type=int, default=3, help="runs per endpoint (median)")
    parser.add_argument("--connections", default="64,256", help="comma-separated")
    parser.add_argument(
        "--only", action="append", default=[], help="endpoints whose label has this"
    )
    arguments = parser.parse_args()
    main(
        arguments.seconds,
        arguments.runs,
        [int(count) for count in arguments.connections.split(",")],
        arguments.only,
    )
