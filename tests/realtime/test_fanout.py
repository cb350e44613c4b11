"""Events cross processes: a change made through API process A, or by the worker,
reaches clients connected to process B (and A)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from websockets.asyncio.client import connect

from bench.common import spawn, stop
from tests.factories import create_item
from tests.realtime.conftest import PUBLIC_BASE_URL, Cluster, live_account
from tests.realtime.test_sse import body, next_event, stream
from tests.realtime.test_websocket import bearer, next_message


@pytest.fixture
def worker(cluster: Cluster) -> Iterator[None]:
    process = spawn(["worker"], cluster.env)
    try:
        yield
    finally:
        assert stop(process) == 0


async def test_an_item_created_through_one_process_reaches_the_other(
    cluster: Cluster, api: httpx.AsyncClient
) -> None:
    owner = await live_account(api)
    async with (
        connect(cluster.b.ws_url, subprotocols=bearer(owner)) as ws,
        stream(cluster.b.url, owner) as events,
    ):
        item = await create_item(api, owner)  # `api` talks to process A
        assert (await next_message(ws))["data"] == item
        assert body(await next_event(events))["data"] == item


async def test_an_export_finished_by_the_worker_reaches_both_processes(
    cluster: Cluster, api: httpx.AsyncClient, worker: None
) -> None:
    owner = await live_account(api)
    await create_item(api, owner, title="Exported")
    async with (
        connect(cluster.a.ws_url, subprotocols=bearer(owner)) as on_a,
        stream(cluster.b.url, owner) as on_b,
    ):
        accepted = await api.post("/api/v1/items/exports", headers=owner.headers)
        assert accepted.status_code == 202
        from_a = await next_message(on_a, within=15)
        from_b = body(await next_event(on_b, within=15))
    assert from_a == from_b
    assert from_a["type"] == "job.completed"
    job = from_a["data"]
    assert (job["id"], job["status"], job["result"]["rows"]) == (
        accepted.json()["job_id"],
        "complete",
        1,
    )
    status = await api.get(accepted.json()["status_url"], headers=owner.headers)
    assert status.json()["status"] == "complete"
    # The worker links to PUBLIC_BASE_URL, the address clients know the API by.
    path = f"/api/v1/jobs/{job['id']}/download"
    assert job["download_url"] == f"{PUBLIC_BASE_URL}{path}"
    download = await api.get(path, headers=owner.headers)
    assert download.status_code == 200
    assert "Exported" in download.text


async def test_an_upload_through_one_process_reaches_the_other(
    cluster: Cluster, api: httpx.AsyncClient
) -> None:
    owner = await live_account(api)
    async with connect(cluster.b.ws_url, subprotocols=bearer(owner)) as ws:
        uploaded = await api.post(
            "/api/v1/files",
            files=[("files", ("notes.txt", b"hello\n", "text/plain"))],
            headers=owner.headers,
        )
        assert uploaded.status_code == 201
        event = await next_message(ws)
    assert event["type"] == "file.uploaded"
    assert event["data"] == uploaded.json()[0]
