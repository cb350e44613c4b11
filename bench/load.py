"""The locust load test (`make load`), its knee, and the soak.

Starts the API and its worker the way an operator does (one process each, bench
database `app_bench`, rate limits off: the whole load comes from one address), runs
`bench/locustfile.py` headless, and prints locust's summary with the API's RSS before
and after.

    uv run --group load python -m bench.load                        # make load: 50 users, 60 s
    uv run --group load python -m bench.load --users 120 --seconds 300   # a soak
    uv run --group load python -m bench.load --knee                 # find the knee

`--knee` raises the user count step by step (a fresh run of `--seconds` per step) and
reports the first count where the p99 of all requests passes 250 ms. Statistics are
reset once every user has started (registration and login hash passwords: a ramp, not
the steady state).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from bench.common import (
    bench_env,
    free_port,
    fresh_database,
    rss_mib,
    settings_from,
    spawn,
    stop,
    wait_for_http,
)

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
KNEE_P99_MS = 250
KNEE_STEPS = (25, 50, 100, 150, 200, 300, 400)


@dataclass(frozen=True)
class Summary:
    users: int
    requests: int
    failures: int
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    rss_start: float
    rss_end: float
    rss_by_minute: list[float]

    def line(self) -> str:
        minutes = ", ".join(f"{rss:.0f}" for rss in self.rss_by_minute)
        return (
            f"{self.users} users: {self.requests} requests, {self.failures} failures, "
            f"{self.rps:.0f} req/s, p50 {self.p50_ms:.0f} ms, p95 {self.p95_ms:.0f} ms, "
            f"p99 {self.p99_ms:.0f} ms; API RSS {self.rss_start:.0f} -> {self.rss_end:.0f} MiB"
            + (f" (at each minute: {minutes})" if self.rss_by_minute else "")
        )


def _locust() -> list[str]:
    if shutil.which("locust") is None:
        raise SystemExit("locust is needed: uv sync --group load (make load does it)")
    return ["locust"]


def _aggregated(prefix: Path) -> dict[str, str]:
    with Path(f"{prefix}_stats.csv").open() as handle:
        for row in csv.DictReader(handle):
            if row["Name"] == "Aggregated":
                return row
    msg = "locust wrote no Aggregated row"
    raise RuntimeError(msg)


def run_locust(url: str, api_pid: int, *, users: int, seconds: int, quiet: bool = False) -> Summary:
    prefix = Path(tempfile.mkdtemp(prefix="locust-")) / "run"
    rss_start = rss_mib(api_pid)
    command = [
        *_locust(),
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--users",
        str(users),
        "--spawn-rate",
        str(max(1, users // 10)),
        "--run-time",
        f"{seconds}s",
        "--host",
        url,
        "--csv",
        str(prefix),
        "--only-summary",
        "--reset-stats",  # measure the steady state, not the ramp of logins
        "--stop-timeout",
        "10",
        "--exit-code-on-error",
        "0",
    ]
    env = {**bench_env(), "LOAD_RUN_ID": uuid.uuid4().hex[:8]}
    output = subprocess.DEVNULL if quiet else None
    locust = subprocess.Popen(command, env=env, stdout=output, stderr=output)  # noqa: S603
    by_minute: list[float] = []
    started = time.monotonic()
    while locust.poll() is None:  # the API's RSS once a minute, to see it level off
        time.sleep(1)
        if time.monotonic() - started >= 60 * (len(by_minute) + 1):
            by_minute.append(rss_mib(api_pid))
    if locust.returncode != 0:
        raise subprocess.CalledProcessError(locust.returncode, command)
    row = _aggregated(prefix)
    return Summary(
        users=users,
        requests=int(row["Request Count"]),
        failures=int(row["Failure Count"]),
        rps=float(row["Requests/s"]),
        p50_ms=float(row["50%"]),
        p95_ms=float(row["95%"]),
        p99_ms=float(row["99%"]),
        rss_start=rss_start,
        rss_end=rss_mib(api_pid),
        rss_by_minute=by_minute,
    )


def main(users: int, seconds: int, knee: bool) -> None:
    env = bench_env(RATE_LIMIT_ENABLED="false", LOG_LEVEL="WARNING")
    asyncio.run(fresh_database(settings_from(env)))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    logs = Path(tempfile.gettempdir()) / "bench-load"
    logs.mkdir(exist_ok=True)
    api = spawn(["serve", "--port", str(port)], env, log_to=logs / "api.log")
    worker = spawn(["worker"], env, log_to=logs / "worker.log")
    try:
        wait_for_http(f"{url}/health/ready", within=30)
        if not knee:
            summary = run_locust(url, api.pid, users=users, seconds=seconds)
            print(summary.line())  # noqa: T201
            return
        found = None
        for step in KNEE_STEPS:
            summary = run_locust(url, api.pid, users=step, seconds=seconds, quiet=True)
            print(summary.line(), flush=True)  # noqa: T201
            if summary.p99_ms > KNEE_P99_MS:
                found = step
                break
        if found is None:
            print(f"p99 stayed under {KNEE_P99_MS} ms up to {KNEE_STEPS[-1]} users")  # noqa: T201
        else:
            print(  # noqa: T201
                f"knee: p99 passed {KNEE_P99_MS} ms at {found} users; "
                f"soak at 80 %: --users {int(found * 0.8)}"
            )
    finally:
        stop(api)
        stop(worker)
        print(f"server logs in {logs}", file=sys.stderr)  # noqa: T201


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--seconds", type=int, default=60, help="per run (per step with --knee)")
    parser.add_argument("--knee", action="store_true", help="step the users up to the knee")
    arguments = parser.parse_args()
    main(arguments.users, arguments.seconds, arguments.knee)
