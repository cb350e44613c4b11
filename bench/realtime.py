"""Realtime fan-out: N WebSocket clients on one API process.

Starts `app serve` (one process) on the bench database, creates N users (one WebSocket
each; tokens are minted with the service's own codec), and measures

- server memory per connection: the API process's RSS with every client connected,
  minus its RSS before, over N;
- publish-to-receive latency: events are published the way the service publishes them
  (`EventPublisher`, as after a commit) carrying their publish time; each client notes
  when its event arrives. Two loads: a steady stream to random users, and a burst of one
  event to every user at once.

    uv run python -m bench.realtime [--clients 1000] [--rate 200] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import time
from datetime import timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import insert
from websockets.asyncio.client import ClientConnection, connect

from app.core.events import render
from app.core.ids import uuid7
from app.core.resources import Resources
from app.core.security import TokenType
from app.models import User
from bench.common import (
    bench_env,
    free_port,
    fresh_database,
    load_average,
    percentile,
    rss_mib,
    settings_from,
    spawn,
    stop,
    wait_for_http,
)

EVENT = "bench.ping"


def _raise_file_limit(wanted: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


async def _users(resources: Resources, count: int) -> list[tuple[UUID, str]]:
    """`count` users and an access token for each."""
    hashed = await resources.passwords.hash("bench-password-1")
    ids = [uuid7() for _ in range(count)]
    rows = [
        {"id": user_id, "email": f"rt-{n}@example.com", "hashed_password": hashed}
        for n, user_id in enumerate(ids)
    ]
    async with resources.session() as session:
        await session.execute(insert(User), rows)
    return [
        (
            user_id,
            resources.tokens.encode(
                TokenType.access,
                subject=str(user_id),
                jti=uuid7().hex,
                lifetime=timedelta(hours=1),
                claims={"ver": 0},
            ).token,
        )
        for user_id in ids
    ]


class Clients:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.received = 0

    async def listen(self, ws: ClientConnection) -> None:
        async for message in ws:
            now = time.time()
            event: dict[str, Any] = json.loads(message)
            if event.get("type") == EVENT:
                self.latencies.append((now - event["data"]["sent"]) * 1000)
                self.received += 1


async def _publish(resources: Resources, user_id: UUID) -> None:
    await resources.events.publish([render(user_id, EVENT, {"sent": time.time()})])


async def _wait_received(clients: Clients, expected: int, within: float) -> None:
    deadline = time.monotonic() + within
    while clients.received < expected and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)


def _summary(label: str, latencies: list[float], sent: int) -> str:
    if not latencies:
        return f"{label}: nothing received of {sent}"
    return (
        f"{label}: {len(latencies)}/{sent} received; latency p50 {percentile(latencies, 0.5):.1f}"
        f" ms, p99 {percentile(latencies, 0.99):.1f} ms, max {max(latencies):.1f} ms"
    )


async def measure(count: int, rate: float, seconds: float) -> None:
    limit = _raise_file_limit(2 * count + 256)
    env = bench_env()
    settings = settings_from(env)
    await fresh_database(settings)
    port = free_port()
    server = spawn(["serve", "--port", str(port)], env)
    url = f"ws://127.0.0.1:{port}/api/v1/ws"
    sockets: list[ClientConnection] = []
    listeners: list[asyncio.Task[None]] = []
    try:
        await asyncio.to_thread(wait_for_http, f"http://127.0.0.1:{port}/health/live")
        async with Resources.open(settings) as resources:
            await resources.redis.flushdb()
            users = await _users(resources, count)
            print(f"load average {load_average():.2f}; file limit {limit}")  # noqa: T201
            before = rss_mib(server.pid)
            clients = Clients()
            started = time.monotonic()
            for _, token in users:
                ws = await connect(url, subprotocols=["bearer", token], ping_interval=None)  # type: ignore[list-item]
                sockets.append(ws)
                listeners.append(asyncio.create_task(clients.listen(ws)))
            connect_seconds = time.monotonic() - started
            await asyncio.sleep(1)
            after = rss_mib(server.pid)
            print(  # noqa: T201
                f"{count} clients connected in {connect_seconds:.1f} s; API RSS {before:.1f} MiB"
                f" -> {after:.1f} MiB = {(after - before) * 1024 / count:.1f} KiB per connection"
            )

            rng = random.Random(1)  # noqa: S311 - load shape, not secrets
            sent = 0
            next_at = time.monotonic()
            while time.monotonic() - started - connect_seconds < seconds + 1:
                await _publish(resources, rng.choice(users)[0])
                sent += 1
                next_at += 1 / rate
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            await _wait_received(clients, sent, within=10)
            steady = f"steady {rate:.0f} events/s to random users"
            print(_summary(steady, clients.latencies, sent))  # noqa: T201

            clients.latencies, clients.received = [], 0
            await asyncio.gather(*(_publish(resources, user_id) for user_id, _ in users))
            await _wait_received(clients, count, within=30)
            burst = f"burst of one event to each of {count} users"
            print(_summary(burst, clients.latencies, count))  # noqa: T201
            print(f"API RSS at the end {rss_mib(server.pid):.1f} MiB")  # noqa: T201
    finally:
        for task in listeners:
            task.cancel()
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
        stop(server)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=200, help="events per second, steady")
    parser.add_argument("--seconds", type=float, default=10)
    arguments = parser.parse_args()
    asyncio.run(measure(arguments.clients, arguments.rate, arguments.seconds))


if __name__ == "__main__":
    main()
