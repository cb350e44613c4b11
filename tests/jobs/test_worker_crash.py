"""A worker SIGKILLed in the middle of a job: another worker completes it, exactly once.

One trial of `bench/worker_crash.py` (which runs twenty: see README.md, "Jobs"), with
real `app worker` processes against the test database and Redis index.
"""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

from app.core.config import Settings
from app.core.jobs import LEASE_SECONDS
from app.core.resources import Resources
from app.core.storage import LocalStorage
from bench.common import bench_env
from bench.worker_crash import run_trial, seed_owner

ITEMS = 3000


async def test_a_killed_workers_job_is_completed_once_by_the_next_worker(
    settings: Settings, committed: Resources, tmp_path: Path
) -> None:
    env = bench_env(
        DATABASE_URL=settings.database.url,
        REDIS_URL=settings.redis.url,
        STORAGE_DIR=str(tmp_path),
        # The test's cheap argon2 parameters are not needed by the worker; its secret is.
        JWT_SECRET=settings.auth.jwt_secret.get_secret_value(),
    )
    resources = replace(
        committed,
        settings=settings.model_copy(update={"storage_dir": tmp_path}),
        storage=LocalStorage(tmp_path),
    )
    owner_id = await seed_owner(resources, ITEMS)
    rng = random.Random(7)
    trial = None
    for _ in range(3):  # the kill may land after a fast export finished: draw again
        trial = await run_trial(
            resources,
            env,
            owner_id=owner_id,
            owner_items=ITEMS,
            rng=rng,
            kill_within=0.05,
            # Fail in under a minute rather than wait out the export's 600 s timeout.
            deadline=LEASE_SECONDS + 30,
        )
        if trial is not None:
            break
    assert trial is not None, "the export always finished before the kill"
    assert trial.tries == 2
    assert trial.rows == ITEMS
    # The lease, not ARQ's 610 s in-progress timeout, decides when the rerun starts.
    assert trial.rerun_after <= LEASE_SECONDS + 3
    assert trial.complete_after <= LEASE_SECONDS + 30
    assert trial.held
