"""A fleet on one machine, stopped mid-load: does anything fail or get lost?

nginx (from the system's packages) in front of three API processes, two ARQ workers,
and PgBouncer (transaction mode, `DATABASE_PGBOUNCER=true`) in front of PostgreSQL.
Clients read items, create items and start exports through nginx; mid-load one API
process and one worker get SIGTERM. A small controller polls each API process's
`/health/ready` as an orchestrator would, and reports when the stopped one turned
503; with FLEET_RELOAD=1 it also takes it out of nginx's upstream (a reload), as
Kubernetes takes a pod that is not ready out of its Service's endpoints. Default
settings but rate limits (off) and logging (WARNING).

Reports: requests failed (goal 0), jobs lost (exports accepted and never completed,
goal 0), how long readiness answered 503 before the process stopped accepting, and
how long the stopped API process and worker took to leave.

    uv run python -m bench.fleet            # about 40 s; needs nginx and pgbouncer
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.common import (
    bench_env,
    free_port,
    fresh_database,
    settings_from,
    spawn,
    stop,
    wait_for_http,
)
from bench.pgbouncer import pgbouncer

API_PROCESSES = 3
WORKERS = 2
CLIENTS = 24
LOAD_SECONDS = 20
STOP_AFTER_SECONDS = 6
# By default nginx is left alone: it finds the stopped process by its refused
# connections (`proxy_next_upstream error`, safe for a POST: nothing was sent).
# FLEET_RELOAD=1: the controller also takes a process that is not ready out of nginx's
# upstream with a reload (nginx then closes its idle client connections, which costs
# clients that reuse one at that moment a connection error).
RELOAD = os.environ.get("FLEET_RELOAD", "0") == "1"
PASSWORD = "fleet-password-123"  # noqa: S105 - a throwaway bench account


def _nginx_conf(directory: Path, port: int, upstreams: list[int]) -> str:
    servers = "\n".join(f"        server 127.0.0.1:{p} max_fails=0;" for p in upstreams)
    return f"""daemon off;
master_process on;
worker_processes 1;
user root;
pid {directory}/nginx.pid;
error_log {directory}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {directory}/body;
    proxy_temp_path {directory}/proxy;
    fastcgi_temp_path {directory}/fastcgi;
    uwsgi_temp_path {directory}/uwsgi;
    scgi_temp_path {directory}/scgi;
    upstream api {{
{servers}
        keepalive 32;
        keepalive_timeout 4s;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://api;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_next_upstream error timeout;
        }}
    }}
}}
"""


@dataclass
class Nginx:
    directory: Path
    port: int
    process: subprocess.Popen[bytes]
    upstreams: list[int]

    def route_to(self, upstreams: list[int]) -> None:
        self.upstreams = upstreams
        conf = _nginx_conf(self.directory, self.port, upstreams)
        (self.directory / "nginx.conf").write_text(conf)
        self.process.send_signal(signal.SIGHUP)  # graceful reload


@contextlib.contextmanager
def nginx(upstreams: list[int]) -> Iterator[Nginx]:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    with tempfile.TemporaryDirectory(prefix="fleet-nginx-") as name:
        directory = Path(name)
        port = free_port()
        (directory / "nginx.conf").write_text(_nginx_conf(directory, port, upstreams))
        process = subprocess.Popen(  # noqa: S603 - our own arguments
            [binary, "-p", str(directory), "-c", str(directory / "nginx.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_http(f"http://127.0.0.1:{port}/health/live", within=15)
            yield Nginx(directory, port, process, list(upstreams))
        finally:
            process.send_signal(signal.SIGQUIT)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


@dataclass
class Tally:
    statuses: Counter[str] = field(default_factory=Counter)
    exports: list[str] = field(default_factory=list)

    def failed(self) -> int:
        return sum(n for status, n in self.statuses.items() if not status.startswith("2"))


async def _client(
    url: str, headers: dict[str, str], items: list[str], n: int, until: float, tally: Tally
) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=30, headers=headers) as http:
        turn = 0
        while time.monotonic() < until:
            turn += 1
            try:
                if turn % 25 == 0:
                    response = await http.post("/api/v1/items/exports")
                    if response.status_code == 202:
                        # Its path: the URL's host is PUBLIC_BASE_URL's, not nginx's.
                        tally.exports.append(httpx.URL(response.json()["status_url"]).path)
                elif turn % 3 == 0:
                    response = await http.post(
                        "/api/v1/items", json={"title": f"fleet {n}-{turn}", "price": "1.00"}
                    )
                else:
                    response = await http.get(f"/api/v1/items/{items[turn % len(items)]}")
                tally.statuses[str(response.status_code)] += 1
            except httpx.HTTPError as exc:
                tally.statuses[type(exc).__name__] += 1


async def _controller(lb: Nginx, ports: list[int], until: float, seen: dict[int, float]) -> None:
    """The orchestrator's endpoints controller: a process whose readiness fails leaves
    the upstream."""
    async with httpx.AsyncClient(timeout=1) as http:
        while time.monotonic() < until:
            for port in list(lb.upstreams):
                try:
                    ready = await http.get(f"http://127.0.0.1:{port}/health/ready")
                    draining = ready.status_code == 503
                except httpx.HTTPError:
                    draining = True
                if draining and port in lb.upstreams:
                    seen.setdefault(port, time.monotonic())
                    if RELOAD:
                        lb.route_to([p for p in lb.upstreams if p != port])
            await asyncio.sleep(0.25)


async def _account(url: str) -> tuple[dict[str, str], list[str]]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        email = "fleet@example.com"
        await http.post("/api/v1/auth/register", json={"email": email, "password": PASSWORD})
        token = await http.post(
            "/api/v1/auth/token", data={"username": email, "password": PASSWORD}
        )
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        items = []
        for n in range(20):
            created = await http.post(
                "/api/v1/items", json={"title": f"seed {n}", "price": "2.00"}, headers=headers
            )
            items.append(created.json()["id"])
        return headers, items


async def _wait_for_exports(url: str, headers: dict[str, str], status_urls: list[str]) -> int:
    """How many accepted exports never completed (within 60 s of the end of the load)."""
    pending = set(status_urls)
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient(base_url=url, timeout=10, headers=headers) as http:
        while pending and time.monotonic() < deadline:
            for status_url in list(pending):
                job = await http.get(status_url)
                if job.status_code == 200 and job.json()["status"] in ("complete", "failed"):
                    pending.discard(status_url)
            await asyncio.sleep(0.5)
    return len(pending)


def main() -> None:
    base = bench_env(RATE_LIMIT_ENABLED="false")
    asyncio.run(fresh_database(settings_from(base)))
    with pgbouncer(pool_size=10) as bouncer:
        env = base | {
            "DATABASE_URL": bouncer.url(base["DATABASE_URL"]),
            "DATABASE_PGBOUNCER": "true",
        }
        ports = [free_port() for _ in range(API_PROCESSES)]
        apis = [spawn(["serve", "--port", str(port)], env) for port in ports]
        workers = [spawn(["worker"], env | {"WORKER_NAME": f"fleet-{n}"}) for n in range(WORKERS)]
        try:
            for port in ports:
                wait_for_http(f"http://127.0.0.1:{port}/health/ready")
            with nginx(ports) as lb:
                url = f"http://127.0.0.1:{lb.port}"
                report = asyncio.run(_run(url, lb, ports, apis, workers))
        finally:
            for process in [*apis, *workers]:
                stop(process, grace=40)
    for line in report:
        print(line)  # noqa: T201


async def _run(
    url: str,
    lb: Nginx,
    ports: list[int],
    apis: list[subprocess.Popen[bytes]],
    workers: list[subprocess.Popen[bytes]],
) -> list[str]:
    headers, items = await _account(url)
    tally = Tally()
    started = time.monotonic()
    until = started + LOAD_SECONDS
    left: dict[int, float] = {}
    load = [
        asyncio.create_task(_client(url, headers, items, n, until, tally)) for n in range(CLIENTS)
    ]
    controller = asyncio.create_task(_controller(lb, ports, until, left))
    await asyncio.sleep(STOP_AFTER_SECONDS)
    signalled = time.monotonic()
    apis[0].send_signal(signal.SIGTERM)
    workers[0].send_signal(signal.SIGTERM)
    api_exit, worker_exit = await asyncio.gather(
        asyncio.to_thread(apis[0].wait, 60), asyncio.to_thread(workers[0].wait, 60)
    )
    api_gone = time.monotonic() - signalled
    worker_gone = None if workers[0].returncode is None else time.monotonic() - signalled
    await asyncio.gather(*load, controller)
    lost = await _wait_for_exports(url, headers, tally.exports)
    out_of_rotation = left.get(ports[0])
    return [
        f"load: {CLIENTS} clients for {LOAD_SECONDS} s through nginx to {API_PROCESSES} API "
        f"processes, {WORKERS} workers, PgBouncer; SIGTERM to one API process and one "
        f"worker at {STOP_AFTER_SECONDS} s",
        f"requests: {sum(tally.statuses.values())}, "
        f"by status {dict(sorted(tally.statuses.items()))}",
        f"requests failed: {tally.failed()}",
        f"exports accepted: {len(tally.exports)}, jobs lost: {lost}",
        "readiness 503 seen by the controller "
        + (
            f"{out_of_rotation - signalled:.2f} s after SIGTERM"
            + (" (taken out of nginx)" if RELOAD else "")
            if out_of_rotation is not None
            else "never"
        ),
        f"stopped API process left after {api_gone:.1f} s (exit {api_exit})",
        f"stopped worker left after {worker_gone or 0:.1f} s (exit {worker_exit})",
    ]


if __name__ == "__main__":
    main()
