"""Kill a worker in the middle of a job and start another: the job must still complete, once.

Each trial queues a real item export the way a request does (the job row and its outbox
entry commit together; the job reaches ARQ after the commit), starts a worker
(`python -m app worker`), waits until the export is in progress, SIGKILLs the worker at
a random moment of it, and starts a new worker. The trial holds when

- the job is `complete` within `timeout + 10 s` of the kill (the export's timeout: 600 s);
- its CSV holds every one of the owner's items exactly once, under one file;
- ARQ ran it exactly twice (the killed try and the rerun), never more.

    uv run python -m bench.worker_crash --trials 20 --items 100000
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import random
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

from arq.constants import retry_key_prefix
from arq.jobs import Job as ArqJob
from sqlalchemy import select

from app.auth.actor import Actor
from app.auth.scopes import EVERY_SCOPE
from app.bootstrap import seed_demo_data
from app.core.resources import Resources
from app.items import service as item_service
from app.items.tasks import EXPORT_TIMEOUT
from app.models import Job, JobStatus, User
from bench.common import bench_env, fresh_database, settings_from, spawn, stop

DEADLINE_SECONDS = EXPORT_TIMEOUT + 10


@dataclass(frozen=True)
class Trial:
    killed_after: float  # seconds after the export was seen in progress
    killed_while: JobStatus  # the job's stored status right after the kill
    rerun_after: float  # seconds from the kill to the rerun's start
    complete_after: float  # seconds from the kill to `complete`
    tries: int
    rows: int
    leftover_partials: int

    @property
    def held(self) -> bool:
        return self.complete_after <= DEADLINE_SECONDS and self.tries == 2


async def job_status(resources: Resources, job_id: UUID) -> JobStatus | None:
    async with resources.session() as session:
        job = await session.get(Job, job_id)
        return job.status if job else None


async def wait_for_status(
    resources: Resources, job_id: UUID, wanted: JobStatus, within: float
) -> float:
    started = time.monotonic()
    while (status := await job_status(resources, job_id)) != wanted:
        # A vanished row (None) or a failure will not turn into `wanted`: stop waiting.
        if status in (None, JobStatus.failed) or time.monotonic() - started > within:
            msg = f"job {job_id} is {status}, not {wanted}, after {within} s"
            raise AssertionError(msg)
        await asyncio.sleep(0.02)
    return time.monotonic()


async def _tries(resources: Resources, arq_job_id: str) -> int:
    value = await resources.redis.get(retry_key_prefix + arq_job_id)
    return int(value or 0)


async def queue_export(resources: Resources, owner_id: UUID) -> UUID:
    async with resources.session() as session:
        owner = await session.get(User, owner_id)
        assert owner is not None
        actor = Actor(id=owner.id, role=owner.role, scopes=EVERY_SCOPE)
        job = await item_service.request_export(session, actor)
    return job.id


def check_export_file(storage_dir: Path, job_id: UUID, owner_items: int) -> tuple[int, int]:
    exports = storage_dir / "exports"
    final = list(exports.glob(f"{job_id}*.csv"))
    assert len(final) == 1, f"expected one export file, found {final}"
    with final[0].open(newline="") as handle:
        ids = [row["id"] for row in csv.DictReader(handle)]
    assert len(ids) == len(set(ids)) == owner_items, (len(ids), len(set(ids)), owner_items)
    partials = len(list(exports.glob(f".{job_id}.csv.*.part")))
    return len(ids), partials


async def run_trial(
    resources: Resources,
    env: Mapping[str, str],
    *,
    owner_id: UUID,
    owner_items: int,
    rng: random.Random,
    kill_within: float,
    deadline: float = DEADLINE_SECONDS,
) -> Trial | None:
    """One kill and recovery; None when the export finished before the kill landed.

    `deadline` bounds the wait for the rerun and for `complete`, in seconds after the kill.
    """
    job_id = await queue_export(resources, owner_id)
    arq_job_id = f"{item_service.EXPORT_JOB}:{job_id}"
    first = spawn(["worker"], env)
    try:
        in_progress = await wait_for_status(resources, job_id, JobStatus.in_progress, within=30)
        await asyncio.sleep(rng.uniform(0, kill_within))
        first.send_signal(signal.SIGKILL)
        first.wait()
        killed = time.monotonic()
    finally:
        if first.poll() is None:
            first.kill()
    if await ArqJob(arq_job_id, resources.arq).result_info() is not None:
        return None
    killed_while = await job_status(resources, job_id)
    assert killed_while is not None
    second = spawn(["worker"], env)
    try:
        while await _tries(resources, arq_job_id) < 2:
            if time.monotonic() - killed > deadline:
                break
            await asyncio.sleep(0.02)
        rerun = time.monotonic()
        complete = await wait_for_status(resources, job_id, JobStatus.complete, within=deadline)
        info = await ArqJob(arq_job_id, resources.arq).result_info()
        while info is None:  # the row commits just before ARQ records the result
            await asyncio.sleep(0.02)
            info = await ArqJob(arq_job_id, resources.arq).result_info()
    finally:
        code = stop(second)
    assert code == 0, f"the second worker exited with {code}"
    rows, partials = check_export_file(resources.settings.storage_dir, job_id, owner_items)
    return Trial(
        killed_after=killed - in_progress,
        killed_while=killed_while,
        rerun_after=rerun - killed,
        complete_after=complete - killed,
        tries=info.job_try,
        rows=rows,
        leftover_partials=partials,
    )


async def seed_owner(resources: Resources, items: int) -> UUID:
    await seed_demo_data(resources.settings, users=1, items_per_user=items)
    async with resources.session() as session:
        owner_id = await session.scalar(select(User.id).where(User.email == "demo-0@example.com"))
    assert owner_id is not None
    return owner_id


async def main(trials: int, items: int, seed: int) -> int:
    env = bench_env()
    settings = settings_from(env)
    await fresh_database(settings)
    rng = random.Random(seed)  # noqa: S311 - kill times, not secrets
    async with Resources.open(settings) as resources:
        await resources.redis.flushdb()
        owner_id = await seed_owner(resources, items)
        # How long one export runs here, to kill inside it.
        probe = await queue_export(resources, owner_id)
        worker = spawn(["worker"], env)
        started = await wait_for_status(resources, probe, JobStatus.in_progress, within=30)
        duration = await wait_for_status(resources, probe, JobStatus.complete, within=600) - started
        stop(worker)
        print(f"{items} items; one export takes {duration:.2f} s; {trials} trials")  # noqa: T201
        results: list[Trial] = []
        while len(results) < trials:
            trial = await run_trial(
                resources,
                env,
                owner_id=owner_id,
                owner_items=items,
                rng=rng,
                kill_within=duration,
            )
            if trial is None:
                print("the export finished before the kill; trying again")  # noqa: T201
                continue
            results.append(trial)
            number = len(results)
            print(  # noqa: T201
                f"trial {number:2}: killed {trial.killed_after:4.2f} s into the export "
                f"(stored status {trial.killed_while.value}), rerun after "
                f"{trial.rerun_after:5.2f} s, complete after {trial.complete_after:5.2f} s, "
                f"tries={trial.tries}, rows={trial.rows}, leftover partial files="
                f"{trial.leftover_partials}: {'held' if trial.held else 'FAILED'}"
            )
    held = sum(trial.held for trial in results)
    worst = max(trial.complete_after for trial in results)
    print(  # noqa: T201
        f"{held}/{trials} trials held; slowest completion {worst:.2f} s after the kill "
        f"(limit {DEADLINE_SECONDS} s)"
    )
    return 0 if held == trials else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    arguments = parser.parse_args()
    raise SystemExit(asyncio.run(main(arguments.trials, arguments.items, arguments.seed)))
