"""PostgreSQL crashes under light load, then comes back on the same port.

A live API process (`python -m app serve`) runs against a private PostgreSQL and Redis
(see conftest.py). While a light load runs (every 0.3 s: liveness, readiness, a page of
items, a create with an `Idempotency-Key`, a read of a cached item), PostgreSQL is
crashed the way `pg_ctl stop -m immediate` does it, left down for 4 s, and started
again. It restarts the way a crashed server with WAL to replay does: listening, but
answering every connection with SQLSTATE 57P03 ("not accepting connections") for 1 s
before it serves (see `PrivatePostgres.start`). From the restart a client asks for a
page of items one request after another until one succeeds, to look at that closely.
Every request must be answered within its client timeout, and none with a 500:

- `/health/ready` answers 503 within 2 s of the crash (and every answer takes < 2 s);
- the routes that need the database answer a 503 problem (`application/problem+json`,
  `Retry-After`) within 3 s of the crash, and none of them takes 3 s or more;
- `/health/live` answers 200 throughout, and so does the cached item read, which needs
  only Redis (README.md, "Caching");
- within 5 s of the restart every probe answers 2xx again, and keeps doing so;
- a create that failed during the outage left its `Idempotency-Key` free: the retry
  creates the item (201, not a replay, not 409).

The second test freezes PostgreSQL instead (SIGSTOP to every process of it, as a frozen
VM or a network partition would): nothing is refused or closed, nothing answers. The
same limits hold, which only the service's own client-side timeouts can give (README.md,
"Outages"); within 5 s of the thaw every probe answers 2xx again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from app.core.config import Settings
from tests.factories import Account, create_account, create_item
from tests.faults.conftest import (
    Load,
    PrivatePostgres,
    PrivateRedis,
    Probe,
    idempotency_key,
    logs_on_failure,
    private_env,
    report,
    seconds_to_first_503,
)
from tests.live import start_server

API = "/api/v1"
OUTAGE_SECONDS = 4.0
FROZEN_SECONDS = 6.0
READY_WITHIN = 2.0
DATABASE_ROUTES_WITHIN = 3.0
RECOVERY_WITHIN = 5.0
# After the restart, PostgreSQL answers every connection with "not accepting
# connections" (57P03) this long, as during a crash recovery with WAL to replay.
RECOVERING_SECONDS = 1.0
NEW_ITEM = {"title": "Lamp", "price": "3.00"}
# What each probe may answer at any time; anything else (a 500, no answer) fails.
ALLOWED = {
    "live": {200},
    "ready": {200, 503},
    "list": {200, 503},
    "create": {201, 503},
    "read": {200},
    "restart": {200, 503},
}
DATABASE_ROUTES = ("list", "create", "restart")


@dataclass(frozen=True)
class Serving:
    url: str
    client: httpx.AsyncClient
    account: Account
    item: dict[str, Any]


@contextlib.asynccontextmanager
async def _serving(env: dict[str, str], server_log: Path) -> AsyncIterator[Serving]:
    """A live API process on the private servers, an account and one item (read once,
    so it is cached); stopped at the end."""
    server = await start_server(env, log_to=server_log)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            account = await create_account(client)
            item = await create_item(client, account)
            read = await client.get(f"{API}/items/{item['id']}", headers=account.headers)
            assert read.status_code == 200
            yield Serving(server.url, client, account, item)
    finally:
        server.stop(grace=5)


def _probes(account: Account, item: dict[str, Any]) -> dict[str, Probe]:
    """The light load: liveness, readiness, a page of items, a create with an
    `Idempotency-Key`, a read of a cached item."""

    def create(http: httpx.AsyncClient) -> Awaitable[httpx.Response]:
        headers = account.headers | idempotency_key()
        return http.post(f"{API}/items", json=NEW_ITEM, headers=headers)

    return {
        "live": lambda http: http.get("/health/live"),
        "ready": lambda http: http.get("/health/ready"),
        "list": lambda http: http.get(f"{API}/items", headers=account.headers),
        "create": create,
        "read": lambda http: http.get(f"{API}/items/{item['id']}", headers=account.headers),
    }


def _assert_outage_answers(
    load: Load, *, began: float, ended: float
) -> tuple[float, dict[str, float]]:
    """What must hold of every answer around an outage from `began` to `ended`: only
    allowed statuses, none too slow, readiness 503 within 2 s and database routes a 503
    problem within 3 s, and from then on. Returns those two delays."""
    every = load.of()
    assert every, "the load sent nothing"
    for sample in every:
        assert sample.status in ALLOWED[sample.probe], f"unexpected answer: {sample}"
    for sample in load.of("ready"):
        assert sample.seconds < READY_WITHIN, f"readiness too slow: {sample}"
    for sample in load.of(*DATABASE_ROUTES):
        assert sample.seconds < DATABASE_ROUTES_WITHIN, f"too slow: {sample}"
    for sample in load.of("live", "read"):
        assert sample.seconds < 1, f"too slow: {sample}"

    # Readiness: 503 within 2 s, and from then on until the outage ended.
    outage_ready = load.of("ready", sent_after=began, sent_before=ended)
    ready_after = seconds_to_first_503(outage_ready, began)
    assert ready_after <= READY_WITHIN
    # (A request sent during the outage may be answered after it, successfully.)
    late = [s for s in outage_ready if began + READY_WITHIN < s.ended < ended]
    assert late
    assert all(s.status == 503 for s in late), [str(s) for s in late]

    # The database routes: a 503 problem within 3 s, and from then on.
    routes_after = {}
    for name in ("list", "create"):
        outage = load.of(name, sent_after=began, sent_before=ended)
        routes_after[name] = seconds_to_first_503(outage, began)
        assert routes_after[name] <= DATABASE_ROUTES_WITHIN, name
        late = [s for s in outage if began + DATABASE_ROUTES_WITHIN < s.ended < ended]
        assert late
        assert all(s.is_problem_503 for s in late), [str(s) for s in late]
    unavailable = [s for s in load.of(*DATABASE_ROUTES) if s.status == 503]
    assert all(s.is_problem_503 for s in unavailable)
    return ready_after, routes_after


def _recovered(load: Load, *, since: float) -> float:
    """The moment after which every request sent got a 2xx, each probe at least one."""
    after = load.of(sent_after=since)
    recovered = max((s.ended for s in after if not s.ok), default=since)
    for name in load.probes:
        assert any(s.ok for s in load.of(name, sent_after=recovered)), name
    return recovered


async def _promote_after(postgres: PrivatePostgres, seconds: float) -> None:
    """Let the restarted server recover for `seconds`, then promote it."""
    await asyncio.sleep(seconds)
    await asyncio.to_thread(postgres.promote)


async def test_a_postgres_crash_is_a_quick_503_and_a_quick_recovery(
    settings: Settings, postgres: PrivatePostgres, redis_server: PrivateRedis, tmp_path: Path
) -> None:
    server_log = tmp_path / "server.log"
    async with _serving(private_env(settings, postgres, redis_server, tmp_path), server_log) as api:
        probes = _probes(api.account, api.item)
        async with Load(api.url, probes) as load:
            await asyncio.sleep(1.0)
            crashed = time.monotonic()
            await asyncio.to_thread(postgres.crash)
            await asyncio.sleep(OUTAGE_SECONDS)
            restarted = time.monotonic()
            postgres.start(held_in_recovery=True)
            promotion = asyncio.create_task(_promote_after(postgres, RECOVERING_SECONDS))
            await load.follow("restart", probes["list"], within=RECOVERY_WITHIN + 2)
            await promotion
            await load.wait_until_healthy(since=restarted, within=RECOVERY_WITHIN + 2)

        # After the outage, a retry of a create that failed with its key creates it.
        failed = [s for s in load.of("create", sent_after=crashed) if s.status == 503]
        assert failed
        assert failed[0].idempotency_key is not None
        retry = await api.client.post(
            f"{API}/items",
            json=NEW_ITEM,
            headers=api.account.headers | {"Idempotency-Key": failed[0].idempotency_key},
        )

    with logs_on_failure(server_log, postgres.log):
        ready_after, routes_after = _assert_outage_answers(load, began=crashed, ended=restarted)

        # While PostgreSQL recovered, the database routes answered 503 problems.
        restart = load.of("restart")
        assert restart[-1].ok, [str(s) for s in restart]
        assert len(restart) > 10
        assert all(s.is_problem_503 for s in restart[:-1]), [str(s) for s in restart]

        recovered = _recovered(load, since=restarted)
        assert recovered - restarted <= RECOVERY_WITHIN
        assert retry.status_code == 201, retry.text
        assert "Idempotent-Replayed" not in retry.headers

    report(
        "PostgreSQL crash",
        ready_503_after=ready_after,
        first_503_after=routes_after,
        recovered_after_restart=recovered - restarted,
        first_2xx_after_restart=restart[-1].ended - restarted,
        slowest_answer={name: max(s.seconds for s in load.of(name)) for name in ALLOWED},
        during_outage=load.counts(sent_after=crashed, sent_before=restarted),
        after_restart=load.counts(sent_after=restarted),
        total=len(load.of()),
    )


async def test_a_frozen_postgres_is_a_quick_503_not_a_hang(
    settings: Settings, postgres: PrivatePostgres, redis_server: PrivateRedis, tmp_path: Path
) -> None:
    server_log = tmp_path / "server.log"
    env = private_env(settings, postgres, redis_server, tmp_path)
    async with (
        _serving(env, server_log) as api,
        Load(api.url, _probes(api.account, api.item)) as load,
    ):
        await asyncio.sleep(1.0)
        frozen = time.monotonic()
        postgres.freeze()
        try:
            await asyncio.sleep(FROZEN_SECONDS)
        finally:
            postgres.thaw()
        thawed = time.monotonic()
        await load.wait_until_healthy(since=thawed, within=RECOVERY_WITHIN + 2)

    with logs_on_failure(server_log, postgres.log):
        ready_after, routes_after = _assert_outage_answers(load, began=frozen, ended=thawed)
        recovered = _recovered(load, since=thawed)
        assert recovered - thawed <= RECOVERY_WITHIN

    report(
        "PostgreSQL frozen",
        ready_503_after=ready_after,
        first_503_after=routes_after,
        recovered_after_thaw=recovered - thawed,
        slowest_answer={name: max(s.seconds for s in load.of(name)) for name in load.probes},
        while_frozen=load.counts(sent_after=frozen, sent_before=thawed),
        after_thaw=load.counts(sent_after=thawed),
        total=len(load.of()),
    )
