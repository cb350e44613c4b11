"""SIGTERM under load: in-flight requests finish, the process exits 0 within its grace
period; a worker finishes the job it is running, then exits 0.

WebSocket 1001 and the end of SSE streams on SIGTERM are tested in
tests/realtime/test_shutdown.py.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
from arq.jobs import Job as ArqJob

from app.core.config import Settings
from app.core.resources import Resources
from app.core.storage import LocalStorage
from app.items import service as item_service
from app.models import JobStatus
from bench.common import spawn
from bench.worker_crash import (
    check_export_file,
    job_status,
    queue_export,
    seed_owner,
    wait_for_status,
)
from tests.factories import Account, create_account
from tests.live import live_env, start_server

GRACE_SECONDS = 10
CHUNKS = 20
CHUNK_PAUSE = 0.1  # the upload takes about 2 s to send
LOAD_CLIENTS = 6


@dataclass
class Outcome:
    started: float
    status: int | None = None
    error: str | None = None


async def _slow_upload_body(boundary: str) -> AsyncIterator[bytes]:
    yield (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="files"; filename="slow.txt"\r\n'
        "Content-Type: text/plain\r\n\r\n"
    ).encode()
    for number in range(CHUNKS):
        await asyncio.sleep(CHUNK_PAUSE)
        yield f"chunk {number:04} of a slow upload\n".encode() * 100
    yield f"\r\n--{boundary}--\r\n".encode()


async def _load(url: str, account: Account, until: asyncio.Event, outcomes: list[Outcome]) -> None:
    """GET /items in a loop, a new connection each time (so every request is either
    accepted by the server or refused at connect, never queued on a closing one)."""
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=15, limits=limits) as client:
        while not until.is_set():
            outcome = Outcome(started=time.monotonic())
            outcomes.append(outcome)
            try:
                response = await client.get("/api/v1/items", headers=account.headers)
                outcome.status = response.status_code
            except httpx.TransportError as exc:
                outcome.error = type(exc).__name__
                await asyncio.sleep(0.05)


async def test_sigterm_under_load_lets_in_flight_requests_finish(
    settings: Settings, committed: Resources, tmp_path: Path
) -> None:
    env = live_env(settings, tmp_path, SHUTDOWN_GRACE_SECONDS=str(GRACE_SECONDS))
    server = await start_server(env)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=15) as client:
            account = await create_account(client)
            boundary = "graceful-shutdown-boundary"
            upload = asyncio.create_task(
                client.post(
                    "/api/v1/files",
                    content=_slow_upload_body(boundary),
                    headers=account.headers
                    | {"Content-Type": f"multipart/form-data; boundary={boundary}"},
                )
            )
            stop_load = asyncio.Event()
            outcomes: list[Outcome] = []
            load = [
                asyncio.create_task(_load(server.url, account, stop_load, outcomes))
                for _ in range(LOAD_CLIENTS)
            ]
            await asyncio.sleep(0.6)  # the upload is being read, the load is running
            signalled = time.monotonic()
            server.process.send_signal(signal.SIGTERM)

            uploaded = await upload
            code = await asyncio.to_thread(server.process.wait, GRACE_SECONDS + 5)
            exited = time.monotonic() - signalled
            stop_load.set()
            await asyncio.gather(*load)
    finally:
        server.stop(grace=1)

    # The upload was in flight (1.4 s of its body still to come): it completed.
    assert uploaded.status_code == 201, uploaded.text
    assert uploaded.json()[0]["size"] == CHUNKS * len(b"chunk 0000 of a slow upload\n") * 100
    assert code == 0
    assert exited < GRACE_SECONDS
    # Under load: every request sent before the signal was answered 200; one sent after
    # it was answered 200 too, or never accepted (the listener closed, or uvicorn
    # dropped a connection that had not sent its request yet: safe to retry). Never a 5xx.
    before = [outcome for outcome in outcomes if outcome.started < signalled]
    after = [outcome for outcome in outcomes if outcome.started >= signalled]
    assert len(before) > 20
    assert {(outcome.status, outcome.error) for outcome in before} == {(200, None)}
    never_accepted = {"ConnectError", "ReadError", "RemoteProtocolError"}
    assert all(outcome.status == 200 or outcome.error in never_accepted for outcome in after), (
        Counter((outcome.status, outcome.error) for outcome in after)
    )


async def test_sigterm_lets_a_worker_finish_its_running_job(
    settings: Settings, committed: Resources, tmp_path: Path
) -> None:
    env = live_env(settings, tmp_path, WORKER_SHUTDOWN_GRACE_SECONDS=str(GRACE_SECONDS))
    resources = replace(
        committed,
        settings=settings.model_copy(update={"storage_dir": tmp_path}),
        storage=LocalStorage(tmp_path),
    )
    items = 3000
    owner_id = await seed_owner(resources, items)
    job_id = await queue_export(resources, owner_id)
    worker = spawn(["worker"], env)
    try:
        await wait_for_status(resources, job_id, JobStatus.in_progress, within=30)
        signalled = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(worker.wait, GRACE_SECONDS + 5)
        exited = time.monotonic() - signalled
    finally:
        if worker.poll() is None:
            worker.kill()
    assert code == 0
    assert exited < GRACE_SECONDS
    # The job ran to its end in that worker: complete, on its first try, every row.
    assert await job_status(resources, job_id) == JobStatus.complete
    info = await ArqJob(f"{item_service.EXPORT_JOB}:{job_id}", resources.arq).result_info()
    assert info is not None
    assert (info.success, info.job_try) == (True, 1)
    rows, _ = check_export_file(tmp_path, job_id, items)
    assert rows == items


DRAIN_SECONDS = 1.5


async def test_sigterm_first_turns_readiness_to_503_while_the_process_still_serves(
    settings: Settings, committed: Resources, tmp_path: Path
) -> None:
    """The load balancer's window: for SHUTDOWN_DRAIN_SECONDS after SIGTERM, readiness
    answers 503 `draining` and every request, a write included, is still served; then
    the process stops accepting and exits."""
    env = live_env(settings, tmp_path, SHUTDOWN_DRAIN_SECONDS=str(DRAIN_SECONDS))
    server = await start_server(env)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            account = await create_account(client)
            assert (await client.get("/health/ready")).status_code == 200
            signalled = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.2)
            ready = await client.get("/health/ready")
            live = await client.get("/health/live")
            created = await client.post(
                "/api/v1/items",
                json={"title": "During the drain", "price": "1"},
                headers=account.headers,
            )
            during = time.monotonic() - signalled
            code = await asyncio.to_thread(server.process.wait, DRAIN_SECONDS + 15)
            exited = time.monotonic() - signalled
    finally:
        server.stop(grace=1)
    assert during < DRAIN_SECONDS
    assert (ready.status_code, ready.json()["status"]) == (503, "draining")
    assert live.status_code == 200
    assert created.status_code == 201, created.text
    # Keep-alive connections are not reused meanwhile: the next request opens a new one.
    assert created.headers["connection"] == "close"
    assert code == 0
    assert DRAIN_SECONDS <= exited < DRAIN_SECONDS + 10
