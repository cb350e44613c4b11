from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.storage import Sink
from app.items import export
from app.models import Job, JobStatus
from tests.conftest import RunJobs
from tests.factories import Account, create_account, create_item

EXPORTS = "/api/v1/items/exports"


async def _start_export(client: httpx.AsyncClient, account: Account) -> dict[str, Any]:
    response = await client.post(EXPORTS, headers=account.headers)
    assert response.status_code == 202
    accepted: dict[str, Any] = response.json()
    assert response.headers["location"] == accepted["status_url"]
    return accepted


async def _status(client: httpx.AsyncClient, account: Account, url: str) -> dict[str, Any]:
    response = await client.get(url, headers=account.headers)
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


async def test_export_contains_all_and_only_the_callers_items(
    client: httpx.AsyncClient, run_jobs: RunJobs
) -> None:
    alice = await create_account(client)
    bob = await create_account(client)
    mine = [
        await create_item(client, alice, title=f"Lamp {n}", price=f"{n}.50", tags=["b", "a"])
        for n in range(5)
    ]
    await create_item(client, alice, title='=HYPERLINK("http://evil")', description="+1")
    await create_item(client, bob, title="Not yours")
    await run_jobs()  # welcome emails

    accepted = await _start_export(client, alice)
    assert (await _status(client, alice, accepted["status_url"]))["status"] == "queued"
    assert await run_jobs() == 1

    job = await _status(client, alice, accepted["status_url"])
    assert job["status"] == "complete"
    assert job["result"]["rows"] == 6
    assert job["finished_at"] is not None
    download = await client.get(job["download_url"], headers=alice.headers)
    assert download.status_code == 200
    assert download.headers["content-type"].startswith("text/csv")
    assert download.headers["content-disposition"].startswith("attachment;")
    rows = list(csv.DictReader(io.StringIO(download.text)))
    assert len(rows) == 6
    assert {row["id"] for row in rows} >= {item["id"] for item in mine}
    assert all(row["title"] != "Not yours" for row in rows)
    lamp = next(row for row in rows if row["id"] == mine[3]["id"])
    assert (lamp["title"], lamp["price"], lamp["tags"], lamp["status"]) == (
        "Lamp 3", "3.50", "a;b", "draft",
    )  # fmt: skip
    injected = next(row for row in rows if "HYPERLINK" in row["title"])
    assert injected["title"].startswith("'=")  # never a live formula in a spreadsheet
    assert injected["description"] == "'+1"
    assert job["result"]["bytes"] == len(download.content)


async def test_another_users_job_is_404(client: httpx.AsyncClient, run_jobs: RunJobs) -> None:
    owner = await create_account(client)
    other = await create_account(client)
    accepted = await _start_export(client, owner)
    await run_jobs()
    job = await _status(client, owner, accepted["status_url"])
    assert (await client.get(accepted["status_url"], headers=other.headers)).status_code == 404
    assert (await client.get(job["download_url"], headers=other.headers)).status_code == 404
    listed = await client.get("/api/v1/jobs", headers=other.headers)
    assert listed.json()["items"] == []


async def test_download_before_completion_is_409(client: httpx.AsyncClient) -> None:
    account = await create_account(client)
    accepted = await _start_export(client, account)
    response = await client.get(f"{accepted['status_url']}/download", headers=account.headers)
    assert response.status_code == 409


async def test_status_goes_queued_in_progress_complete(
    client: httpx.AsyncClient, run_jobs: RunJobs, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = await create_account(client)
    await create_item(client, account)
    await run_jobs()
    release = asyncio.Event()
    original: Callable[..., Awaitable[dict[str, int]]] = export.write_csv

    async def gated(session: AsyncSession, *, owner_id: Any, sink: Sink) -> dict[str, int]:
        await release.wait()
        return await original(session, owner_id=owner_id, sink=sink)

    monkeypatch.setattr(export, "write_csv", gated)
    accepted = await _start_export(client, account)
    seen = [(await _status(client, account, accepted["status_url"]))["status"]]
    worker = asyncio.create_task(run_jobs())
    async with asyncio.timeout(10):
        while seen[-1] != "in_progress":
            await asyncio.sleep(0.02)
            seen.append((await _status(client, account, accepted["status_url"]))["status"])
    release.set()
    await worker
    seen.append((await _status(client, account, accepted["status_url"]))["status"])
    assert [seen[0], "in_progress", seen[-1]] == ["queued", "in_progress", "complete"]
    assert set(seen) == {"queued", "in_progress", "complete"}


async def test_a_broken_export_is_marked_failed(
    client: httpx.AsyncClient,
    run_jobs: RunJobs,
    monkeypatch: pytest.MonkeyPatch,
    db: AsyncSession,
) -> None:
    account = await create_account(client)
    await run_jobs()

    async def broken(session: AsyncSession, *, owner_id: Any, sink: Sink) -> dict[str, int]:
        msg = "a bug in the exporter"
        raise ValueError(msg)

    monkeypatch.setattr(export, "write_csv", broken)
    accepted = await _start_export(client, account)
    assert await run_jobs() == 0
    job = await _status(client, account, accepted["status_url"])
    assert job["status"] == "failed"
    assert job["error"] == "The export failed"
    assert "a bug" not in str(job)
    assert job["download_url"] is None
    stored = await db.scalar(select(Job).where(Job.id == accepted["job_id"]))
    assert stored is not None
    assert stored.status == JobStatus.failed


async def test_an_export_job_that_runs_twice_completes_once(
    client: httpx.AsyncClient, run_jobs: RunJobs, resources: Any
) -> None:
    account = await create_account(client)
    await create_item(client, account)
    await run_jobs()
    accepted = await _start_export(client, account)
    await run_jobs()
    first = await _status(client, account, accepted["status_url"])
    # ARQ may run a job again (after a crash); queue the very same job once more.
    await resources.arq.enqueue_job("items.export", accepted["job_id"], _job_id="rerun")
    assert await run_jobs() == 1
    again = await _status(client, account, accepted["status_url"])
    assert again == first


async def test_export_honours_idempotency_keys(client: httpx.AsyncClient) -> None:
    account = await create_account(client)
    headers = account.headers | {"Idempotency-Key": "export-1"}
    first = await client.post(EXPORTS, headers=headers)
    again = await client.post(EXPORTS, headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.json() == again.json()
