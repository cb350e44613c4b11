"""`app serve --workers 2`: two uvicorn processes behind one socket share one rate limit
and one event bus.

Which process serves a connection is the kernel's choice, so the tests find out: they
read, from /proc, which process holds each client's established connection, and keep
one client per process. (Cron ticks run once across several ARQ workers:
tests/jobs/test_cron.py.)
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import httpx
import pytest

from app.core.config import Settings
from app.core.resources import Resources
from tests.factories import Account, create_account
from tests.live import LiveServer, live_env, sse_events, start_server

LIMIT = 30
ITEMS = "/api/v1/items"

pytestmark = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc")


def _children(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == parent:
                found.append(int(entry.name))
    return found


def _established_by_process(server: LiveServer) -> Counter[int]:
    """How many established connections to the server's port each worker holds."""
    port = f"{server.port:04X}"
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(f":{port}") and fields[3] == "01":  # 01: ESTABLISHED
            inodes.add(fields[9])
    held: Counter[int] = Counter()
    for pid in _children(server.process.pid):
        fds = Path(f"/proc/{pid}/fd")
        for fd in fds.iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                held[pid] += 1
    return held


@asynccontextmanager
async def one_client_per_process(
    server: LiveServer, account: Account
) -> AsyncIterator[list[httpx.AsyncClient]]:
    """Two clients, each with one kept-alive connection, held by different processes."""
    async with AsyncExitStack() as stack:
        chosen: dict[int, httpx.AsyncClient] = {}
        # The second process may take seconds to start on a loaded machine.
        deadline = asyncio.get_running_loop().time() + 30
        while asyncio.get_running_loop().time() < deadline:
            client = await stack.enter_async_context(
                httpx.AsyncClient(
                    base_url=server.url,
                    timeout=10,
                    headers=account.headers,
                    limits=httpx.Limits(max_connections=1),
                )
            )
            before = _established_by_process(server)
            assert (await client.get("/health/live")).status_code == 200
            grown = _established_by_process(server) - before
            if len(grown) == 1:
                chosen.setdefault(next(iter(grown)), client)
            if len(chosen) == 2:
                yield list(chosen.values())
                return
            await asyncio.sleep(0.1)
        pytest.fail(f"for 30 s every connection landed on {list(chosen)}")


@pytest.fixture
async def two_workers(
    settings: Settings, committed: Resources, tmp_path: Path
) -> AsyncIterator[LiveServer]:
    env = live_env(settings, tmp_path, RATE_LIMIT_PER_CALLER_PER_MINUTE=str(LIMIT))
    server = await start_server(env, "--workers", "2")
    try:
        yield server
    finally:
        assert server.stop(grace=15) == 0


async def test_a_rate_limit_holds_across_both_processes(two_workers: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=two_workers.url, timeout=10) as anonymous:
        account = await create_account(anonymous)
    async with one_client_per_process(two_workers, account) as clients:
        # Three times the budget, alternating between the two processes.
        statuses = Counter(
            [(await clients[number % 2].get(ITEMS)).status_code for number in range(3 * LIMIT)]
        )
    assert statuses == {200: LIMIT, 429: 2 * LIMIT}


async def test_events_reach_clients_of_both_processes(two_workers: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=two_workers.url, timeout=10) as anonymous:
        account = await create_account(anonymous)
    async with (
        one_client_per_process(two_workers, account) as clients,
        clients[0].stream("GET", "/api/v1/events") as first,
        clients[1].stream("GET", "/api/v1/events") as second,
    ):
        streams = [sse_events(first), sse_events(second)]
        for events in streams:
            opening = await anext(events)
            assert opening.comments == ["connected"]
        async with httpx.AsyncClient(base_url=two_workers.url, timeout=10) as writer:
            created = await writer.post(
                ITEMS, json={"title": "Seen twice", "price": "1.00"}, headers=account.headers
            )
            assert created.status_code == 201
        for events in streams:
            async with asyncio.timeout(5):
                event = await anext(events)
            assert event.event == "item.created"
            assert event.json()["data"]["id"] == created.json()["id"]
