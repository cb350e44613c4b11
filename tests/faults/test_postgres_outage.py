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
import time
from pathlib import Path

from app.core.config import Settings
from tests.faults.conftest import (
    API,
    NEW_ITEM,
    OUTAGE_SECONDS,
    RECOVERY_WITHIN,
    Load,
    PrivatePostgres,
    PrivateRedis,
    assert_outage_answers,
    light_load,
    logs_on_failure,
    private_env,
    recovered_since,
    report,
    serving,
)

FROZEN_SECONDS = 6.0
# After the restart, PostgreSQL answers every connection with "not accepting
# connections" (57P03) this long, as during a crash recovery with WAL to replay.
RECOVERING_SECONDS = 1.0
# What each probe may answer at any time; anything else (a 500, no answer) fails.
ALLOWED = {
    "live": {200},
    "ready": {200, 503},
    "list": {200, 503},
    "create": {201, 503},
    "read": {200},
    "restart": {200, 503},
}


def _assert_answers(load: Load, *, began: float, ended: float) -> tuple[float, dict[str, float]]:
    # The routes that need PostgreSQL (the close look after the restart is timed too);
    # liveness and the cached read, which needs only Redis, must stay fast.
    return assert_outage_answers(
        load,
        began=began,
        ended=ended,
        allowed=ALLOWED,
        routes=("list", "create"),
        timed=("restart",),
        quick=("live", "read"),
    )


async def _promote_after(postgres: PrivatePostgres, seconds: float) -> None:
    """Let the restarted server recover for `seconds`, then promote it."""
    await asyncio.sleep(seconds)
    await asyncio.to_thread(postgres.promote)


async def test_a_postgres_crash_is_a_quick_503_and_a_quick_recovery(
    settings: Settings, postgres: PrivatePostgres, redis_server: PrivateRedis, tmp_path: Path
) -> None:
    server_log = tmp_path / "server.log"
    async with serving(private_env(settings, postgres, redis_server, tmp_path), server_log) as api:
        probes = light_load(api.account, api.item)
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
        ready_after, routes_after = _assert_answers(load, began=crashed, ended=restarted)

        # While PostgreSQL recovered, the database routes answered 503 problems.
        restart = load.of("restart")
        assert restart[-1].ok, [str(s) for s in restart]
        assert len(restart) > 10
        assert all(s.is_problem_503 for s in restart[:-1]), [str(s) for s in restart]

        recovered = recovered_since(load, since=restarted)
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
        serving(env, server_log) as api,
        Load(api.url, light_load(api.account, api.item)) as load,
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
        ready_after, routes_after = _assert_answers(load, began=frozen, ended=thawed)
        recovered = recovered_since(load, since=thawed)
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
