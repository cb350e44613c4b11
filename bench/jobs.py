"""How fast the ARQ worker takes jobs: no-op throughput and enqueue-to-start latency.

One worker process (`app.worker.create_worker`, the product's settings, with a no-op
function added) against the bench Redis index. Two measurements:

- throughput: N no-op jobs are queued first, then the worker drains them; jobs/s is N
  over the time from the first start to the last finish;
- latency: while the worker idles, jobs are queued one at a time at a steady rate, and
  each job's start time minus its enqueue time (both recorded by ARQ) is collected.

    uv run python -m bench.jobs [--jobs 5000] [--latency-jobs 500] [--rate 50]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import uvloop
from arq import ArqRedis
from arq.jobs import Job, JobResult

from app.core.jobs import job
from app.core.logging import configure_logging
from app.core.resources import Resources
from app.worker import FUNCTIONS, create_worker
from bench.common import bench_env, percentile, settings_from, spawn, stop

NOOP = "bench.noop"
WORKER_READY_KEY = "bench:worker-ready"


async def noop(ctx: dict[str, Any]) -> None:
    return None


async def _mark_ready(ctx: dict[str, Any]) -> None:
    await ctx["redis"].set(WORKER_READY_KEY, "1")


def serve_worker() -> None:
    """The worker process: the product worker plus the no-op function."""
    settings = settings_from(bench_env())
    configure_logging("WARNING", "text")
    asyncio.set_event_loop(uvloop.new_event_loop())
    worker = create_worker(
        settings,
        functions=[*FUNCTIONS, job(noop, name=NOOP, timeout=10, max_tries=1)],
        on_job_start=None,
    )
    startup = worker.on_startup

    async def on_startup(ctx: dict[str, Any]) -> None:
        if startup is not None:
            await startup(ctx)
        await _mark_ready(ctx)

    worker.on_startup = on_startup
    worker.run()


async def _results(arq: ArqRedis, job_ids: list[str], within: float) -> list[JobResult]:
    deadline = time.monotonic() + within
    results: list[JobResult] = []
    pending = list(job_ids)
    while pending:
        if time.monotonic() > deadline:
            msg = f"{len(pending)} jobs unfinished after {within} s"
            raise TimeoutError(msg)
        info = await Job(pending[0], arq).result_info()
        if info is None:
            await asyncio.sleep(0.05)
            continue
        assert isinstance(info, JobResult)
        results.append(info)
        pending.pop(0)
    return results


async def _wait_ready(resources: Resources) -> None:
    async with asyncio.timeout(60):
        while not await resources.redis.exists(WORKER_READY_KEY):  # noqa: ASYNC110 - another process
            await asyncio.sleep(0.05)


async def measure(jobs: int, latency_jobs: int, rate: float) -> None:
    env = bench_env()
    settings = settings_from(env)
    async with Resources.open(settings) as resources:
        await resources.redis.flushdb()
        arq = resources.arq

        queued = []
        for number in range(jobs):
            queued_job = await arq.enqueue_job(NOOP, _job_id=f"throughput-{number}")
            assert queued_job is not None
            queued.append(queued_job.job_id)
        worker = spawn(["-m", "bench.jobs", "--serve-worker"], env)
        try:
            await _wait_ready(resources)
            done = await _results(arq, queued, within=600)
            first_start = min(result.start_time for result in done)
            last_finish = max(result.finish_time for result in done)
            elapsed = (last_finish - first_start).total_seconds()
            print(  # noqa: T201
                f"throughput: {jobs} no-op jobs in {elapsed:.2f} s = {jobs / elapsed:.0f} jobs/s "
                f"(one worker process, WORKER_MAX_JOBS={settings.worker.max_jobs}, "
                f"WORKER_POLL_DELAY_SECONDS={settings.worker.poll_delay_seconds})"
            )

            paced = []
            interval = 1 / rate
            next_at = time.monotonic()
            for number in range(latency_jobs):
                next_at += interval
                paced_job = await arq.enqueue_job(NOOP, _job_id=f"latency-{number}")
                assert paced_job is not None
                paced.append(paced_job.job_id)
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            latencies = [
                (result.start_time - result.enqueue_time).total_seconds() * 1000
                for result in await _results(arq, paced, within=120)
            ]
        finally:
            stop(worker)
        print(  # noqa: T201
            f"enqueue-to-start latency at {rate:.0f} jobs/s over {latency_jobs} jobs: "
            f"p50 {percentile(latencies, 0.50):.1f} ms, p99 {percentile(latencies, 0.99):.1f} ms, "
            f"max {max(latencies):.1f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--latency-jobs", type=int, default=500)
    parser.add_argument("--rate", type=float, default=50, help="jobs per second while pacing")
    parser.add_argument("--serve-worker", action="store_true", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.serve_worker:
        serve_worker()
        return
    asyncio.run(measure(arguments.jobs, arguments.latency_jobs, arguments.rate))


if __name__ == "__main__":
    main()
