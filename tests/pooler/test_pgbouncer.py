"""The service behind a real PgBouncer in transaction pooling mode (`DATABASE_PGBOUNCER`),
started by the tests on a free port with a server pool smaller than the clients' pools,
so that connections of several processes really share server sessions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from app.core.config import DatabaseSettings, Settings
from app.core.resources import Resources
from bench.common import spawn, stop
from bench.pgbouncer import PgBouncer, pgbouncer
from tests.conftest import app_client
from tests.factories import create_account, create_item
from tests.live import live_env, sse_events, start_server
from tests.waiting import wait_until

ITEMS = "/api/v1/items"


@pytest.fixture(scope="module")
def bouncer() -> Iterator[PgBouncer]:
    with pgbouncer(pool_size=3) as running:
        yield running


def _through(settings: Settings, bouncer: PgBouncer, *, pgbouncer: bool = True) -> Settings:
    database = settings.database.model_copy(
        update={"url": bouncer.url(settings.database.url), "pgbouncer": pgbouncer}
    )
    return settings.model_copy(update={"database": database})


@pytest_asyncio.fixture
async def pooled(
    settings: Settings, bouncer: PgBouncer, committed: Resources
) -> AsyncIterator[Settings]:
    """Settings through PgBouncer; what the test writes is committed (and emptied)."""
    yield _through(settings, bouncer)


async def test_the_main_flows_work_through_pgbouncer(pooled: Settings) -> None:
    async with app_client(pooled) as api:
        account = await create_account(api)
        refreshed = await api.post(
            "/api/v1/auth/refresh", json={"refresh_token": account.refresh_token}
        )
        assert refreshed.status_code == 200
        item = await create_item(api, account, title="Brass lamp", description="seventies")
        path = f"{ITEMS}/{item['id']}"
        got = await api.get(path, headers=account.headers)
        assert got.status_code == 200
        etag = got.headers["etag"]
        cached = await api.get(path, headers=account.headers | {"If-None-Match": etag})
        assert cached.status_code == 304
        changed = await api.patch(
            path, json={"title": "Copper lamp"}, headers=account.headers | {"If-Match": etag}
        )
        assert changed.status_code == 200
        stale = await api.patch(
            path, json={"title": "Lost"}, headers=account.headers | {"If-Match": etag}
        )
        assert stale.status_code == 412
        found = await api.get(ITEMS, params={"q": "copper"}, headers=account.headers)
        assert [i["id"] for i in found.json()["items"]] == [item["id"]]
        uploaded = await api.post(
            "/api/v1/files",
            files=[("files", ("notes.txt", b"hello through the pooler\n", "text/plain"))],
            headers=account.headers,
        )
        assert uploaded.status_code == 201, uploaded.text
        [stored] = uploaded.json()
        content = await api.get(f"/api/v1/files/{stored['id']}/content", headers=account.headers)
        assert content.content == b"hello through the pooler\n"
        deleted = await api.delete(path, headers=account.headers)
        assert deleted.status_code == 204
        assert (await api.get(path, headers=account.headers)).status_code == 404


async def test_many_concurrent_requests_from_two_processes_share_the_pooler(
    pooled: Settings,
) -> None:
    """Two apps (each its own pool) over three server sessions: the prepared statement
    names of one never collide with the other's, nor a statement with another's
    parameters."""
    async with app_client(pooled) as first, app_client(pooled) as second:
        account = await create_account(first)
        items = [await create_item(first, account, title=f"Lamp {n}") for n in range(4)]

        async def read(api: httpx.AsyncClient, n: int) -> httpx.Response:
            item = items[n % len(items)]
            return await api.get(f"{ITEMS}/{item['id']}", headers=account.headers)

        async def write(api: httpx.AsyncClient, n: int) -> httpx.Response:
            body = {"title": f"Concurrent {n}", "price": f"{n}.00", "tags": [f"t{n % 3}"]}
            return await api.post(ITEMS, json=body, headers=account.headers)

        calls = [(read if n % 2 else write)(first if n % 3 else second, n) for n in range(60)]
        responses = await asyncio.gather(*calls)
        assert sorted({r.status_code for r in responses}) == [200, 201], [
            r.text for r in responses if r.status_code >= 300
        ]
        listed = await second.get(ITEMS, params={"limit": 100}, headers=account.headers)
        assert len(listed.json()["items"]) == 4 + 30


async def test_the_statement_timeout_holds_behind_the_pooler(pooled: Settings) -> None:
    database = pooled.database.model_copy(update={"statement_timeout_ms": 300})
    async with Resources.open(pooled.model_copy(update={"database": database})) as resources:
        async with resources.sessionmaker() as session:
            shown = await session.scalar(text("SHOW statement_timeout"))
            assert shown == "300ms"
        async with resources.sessionmaker() as session:
            with pytest.raises(DBAPIError) as raised:
                await session.execute(text("SELECT pg_sleep(2)"))
        assert getattr(raised.value.orig, "sqlstate", None) == "57014"
        # The limit is per transaction: the pooler's session keeps no setting of ours.
        async with resources.sessionmaker() as session:
            assert await session.scalar(text("SELECT 1")) == 1


async def test_the_pooler_setting_against_postgresql_directly_still_works(
    settings: Settings, committed: Resources
) -> None:
    database = settings.database.model_copy(update={"pgbouncer": True})
    async with app_client(settings.model_copy(update={"database": database})) as api:
        account = await create_account(api)
        await create_item(api, account)
        assert (await api.get("/health/ready")).status_code == 200


async def test_without_the_setting_the_readiness_probe_says_why_and_requests_get_503(
    settings: Settings, bouncer: PgBouncer
) -> None:
    """PgBouncer refuses the statement timeout as a startup parameter: no 500 per
    request, and the probe names the setting to change."""
    async with app_client(_through(settings, bouncer, pgbouncer=False)) as api:
        ready = await api.get("/health/ready")
        assert ready.status_code == 503
        assert "DATABASE_PGBOUNCER=true" in ready.json()["checks"]["database"]["error"]
        login = await api.post(
            "/api/v1/auth/token", data={"username": "a@example.com", "password": "x" * 12}
        )
        assert login.status_code == 503
        assert login.headers["content-type"] == "application/problem+json"


async def test_asyncpg_options_in_the_url_are_typed(
    settings: Settings, committed: Resources
) -> None:
    """`?statement_cache_size=0` in DATABASE_URL is a number to asyncpg, not text (which
    failed every connection with a TypeError); a value that is no number is refused
    when the settings are read."""
    url = settings.database.url + "?statement_cache_size=0&command_timeout=5"
    database = settings.database.model_copy(update={"url": url})
    async with app_client(settings.model_copy(update={"database": database})) as api:
        account = await create_account(api)
        assert (await api.get("/api/v1/users/me", headers=account.headers)).status_code == 200
    with pytest.raises(ValidationError, match="statement_cache_size must be a number"):
        DatabaseSettings(_env_file=None, url=settings.database.url + "?statement_cache_size=x")


async def test_a_live_server_and_worker_through_the_pooler_stream_events_and_run_jobs(
    settings: Settings, bouncer: PgBouncer, committed: Resources, tmp_path: Path
) -> None:
    env = live_env(
        settings,
        tmp_path,
        DATABASE_URL=bouncer.url(settings.database.url),
        DATABASE_PGBOUNCER="true",
    )
    server = await start_server(env)
    worker = None
    try:
        worker = spawn(["worker"], env)
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as api:
            account = await create_account(api)
            async with api.stream("GET", "/api/v1/events", headers=account.headers) as response:
                events = sse_events(response)
                assert response.status_code == 200
                await anext(events)  # the opening comment
                await create_item(api, account, title="Seen live")
                async with asyncio.timeout(5):
                    event = await anext(events)
                assert event.event == "item.created"
            accepted = await api.post(f"{ITEMS}/exports", headers=account.headers)
            assert accepted.status_code == 202
            status_url = accepted.json()["status_url"]

            async def complete() -> bool:
                job = await api.get(status_url, headers=account.headers)
                return bool(job.json()["status"] == "complete")

            await wait_until(complete, within=20)
            job = (await api.get(status_url, headers=account.headers)).json()
            assert job["result"]["rows"] == 1
    finally:
        server.stop(grace=5)
        if worker is not None:
            stop(worker, grace=5)
