"""Redis crashes under light load, then comes back on the same port with its data.

A live API process and a live worker (`python -m app serve`, `python -m app worker`)
run against a private PostgreSQL and Redis (see conftest.py). While a light load runs
(every 0.3 s: liveness, readiness, a page of items, a cached item read, a create with an
`Idempotency-Key`, a login), Redis is SIGKILLed, left down for 4 s, and started again.

What "jobs queued before the outage still run" can honestly mean depends on Redis
keeping its data: a Redis without persistence comes back empty, and no service can run
jobs that no longer exist anywhere (the outbox only covers jobs whose enqueue failed).
The Redis of a job queue should persist, so this one does (`appendonly yes`,
`appendfsync always`: what Redis acknowledged is on disk), and the crash is a real
SIGKILL and restart rather than a pause. Jobs are queued right before the crash, due one
second later, so that no worker can take them before Redis is gone (ARQ keeps such jobs
in its queue the way it keeps a retry waiting for its backoff); an export requested
through the API at the same moment must complete too, whenever it ran.

What must hold (README.md, "Outages"):

- `/health/live` answers 200 throughout; `/health/ready` answers 503 within 2 s, every
  readiness answer in < 2 s;
- every `/api/v1` route answers a 503 problem within 3 s, none later than that: rate
  limits, the token deny-list and the account cache, the login throttle and the
  idempotency keys live in Redis, and the service fails closed rather than let a revoked
  token in or a limit lapse; the event stream too;
- nothing answers 500 and no request hangs;
- within 5 s of the restart every probe answers 2xx again;
- the worker process stays up, reconnects by itself, runs the queued jobs (each once)
  and new ones, and still stops cleanly (exit 0) on SIGTERM.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import httpx
import pytest
from arq.jobs import Job as ArqJob
from redis.exceptions import ConnectionError as RedisConnectionError

from app.core.config import RedisSettings, Settings
from app.core.resources import Resources, build_arq
from app.items.service import EXPORT_JOB
from app.models import Job, JobStatus
from app.worker import create_worker
from bench.common import settings_from, spawn, stop
from tests.factories import Account
from tests.faults.conftest import (
    API,
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

QUEUED_JOBS = 2
ALLOWED = {
    "live": {200},
    "ready": {200, 503},
    "list": {200, 503},
    "read": {200, 503},
    "create": {201, 503},
    "login": {200, 503},
}
ROUTES = ("list", "read", "create", "login")


async def _request_export(client: httpx.AsyncClient, account: Account) -> UUID:
    response = await client.post(f"{API}/items/exports", headers=account.headers)
    assert response.status_code == 202, response.text
    return UUID(response.json()["job_id"])


async def _queue_export_due_in(resources: Resources, owner_id: UUID, seconds: float) -> UUID:
    """An export queued as `POST /items/exports` queues it (the job row, then the ARQ
    job named after it), but due `seconds` from now."""
    async with resources.session() as session:
        job = Job(owner_id=owner_id, kind=EXPORT_JOB)
        session.add(job)
        await session.flush()
    queued = await resources.arq.enqueue_job(
        EXPORT_JOB,
        str(job.id),
        _job_id=f"{EXPORT_JOB}:{job.id}",
        _defer_by=timedelta(seconds=seconds),
    )
    assert queued is not None
    return job.id


async def _finished(resources: Resources, job_id: UUID, *, within: float) -> Job:
    deadline = time.monotonic() + within
    while True:
        async with resources.session() as session:
            job = await session.get(Job, job_id)
        assert job is not None
        if job.status in (JobStatus.complete, JobStatus.failed) or time.monotonic() > deadline:
            assert job.status == JobStatus.complete, f"job {job_id} is {job.status}: {job.error}"
            return job
        await asyncio.sleep(0.05)


async def test_a_redis_crash_fails_closed_and_the_worker_carries_on(
    settings: Settings, postgres: PrivatePostgres, redis_server: PrivateRedis, tmp_path: Path
) -> None:
    env = private_env(settings, postgres, redis_server, tmp_path)
    server_log, worker_log = tmp_path / "server.log", tmp_path / "worker.log"
    worker = spawn(["worker"], env, log_to=worker_log)
    logs = (server_log, worker_log, redis_server.log)
    try:
        async with (
            serving(env, server_log) as api,
            Resources.open(settings_from(env)) as resources,
        ):
            client, account = api.client, api.account
            # The worker is up and runs jobs.
            with logs_on_failure(*logs):
                await _finished(resources, await _request_export(client, account), within=30)

            def login(http: httpx.AsyncClient) -> Awaitable[httpx.Response]:
                form = {"username": account.email, "password": account.password}
                return http.post(f"{API}/auth/token", data=form)

            probes = light_load(account, api.item) | {"login": login}
            async with Load(api.url, probes) as load:
                await asyncio.sleep(1.0)
                queued = [
                    await _queue_export_due_in(resources, account.id, 1.0)
                    for _ in range(QUEUED_JOBS)
                ]
                just_before = await _request_export(client, account)
                crashed = time.monotonic()
                await asyncio.to_thread(redis_server.crash)
                await asyncio.sleep(OUTAGE_SECONDS / 2)
                events = await client.get(f"{API}/events", headers=account.headers)
                anonymous = await client.get(f"{API}/items")
                await asyncio.sleep(OUTAGE_SECONDS / 2)
                worker_alive = worker.poll() is None
                restarted, restarted_at = time.monotonic(), datetime.now(UTC)
                redis_server.start()
                await load.wait_until_healthy(since=restarted, within=RECOVERY_WITHIN + 2)

            with logs_on_failure(*logs):
                assert worker_alive, f"the worker exited with {worker.returncode} during the outage"
                jobs = [await _finished(resources, job_id, within=15) for job_id in queued]
                tries = [
                    (await ArqJob(f"{EXPORT_JOB}:{job.id}", resources.arq).result_info())
                    for job in jobs
                ]
                await _finished(resources, just_before, within=15)
                # And it takes new work.
                after = await _request_export(client, account)
                await _finished(resources, after, within=10)
    finally:
        worker_code = stop(worker, grace=15)

    with logs_on_failure(*logs):
        assert worker_code == 0, f"the worker exited with {worker_code}"
        worker_lines = worker_log.read_text()
        assert worker_lines.count("Redis unreachable") == 1
        assert worker_lines.count("Redis is reachable again") == 1
        ready_after, routes_after = assert_outage_answers(
            load, began=crashed, ended=restarted, allowed=ALLOWED, routes=ROUTES, quick=("live",)
        )
        for response in (events, anonymous):
            assert response.status_code == 503, response.text
            assert response.headers["content-type"].startswith("application/problem+json")

        recovered = recovered_since(load, since=restarted)
        assert recovered - restarted <= RECOVERY_WITHIN

        # The queued jobs waited for Redis (nobody could take them before), then ran once.
        for job, info in zip(jobs, tries, strict=True):
            assert job.started_at is not None
            assert job.started_at > restarted_at
            assert info is not None
            assert info.success
            assert info.job_try == 1
        first_start = min(job.started_at for job in jobs if job.started_at is not None)

    report(
        "Redis crash",
        ready_503_after=ready_after,
        first_503_after=routes_after,
        recovered_after_restart=recovered - restarted,
        queued_job_started_after_restart=(first_start - restarted_at).total_seconds(),
        slowest_answer={name: max(s.seconds for s in load.of(name)) for name in probes},
        during_outage=load.counts(sent_after=crashed, sent_before=restarted),
        after_restart=load.counts(sent_after=restarted),
        total=len(load.of()),
    )


async def test_a_job_slot_taken_as_redis_goes_away_is_given_back(
    settings: Settings, redis_server: PrivateRedis
) -> None:
    """ARQ takes a slot (its job count and a semaphore permit) before it claims a job in
    Redis, and keeps it when the claim fails on a lost connection: with max_jobs=1, one
    such failure would leave the worker waiting forever for a slot."""
    settings = settings.model_copy(
        update={"redis": RedisSettings(_env_file=None, url=redis_server.url)}
    )
    worker = create_worker(settings, max_jobs=1, handle_signals=False, cron_jobs=[])
    worker._pool = build_arq(settings)
    try:
        await worker.pool.ping()
        await asyncio.to_thread(redis_server.crash)
        with pytest.raises(RedisConnectionError):
            await worker.start_jobs([b"queued-job"])
    finally:
        await worker.pool.aclose(close_connection_pool=True)
    assert worker.job_counter == 0
    assert not worker.sem.locked()
