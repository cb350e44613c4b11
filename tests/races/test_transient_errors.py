"""A transaction the database gives up on (deadlock, serialization failure, lock not
available) runs again from the start; only a second failure reaches the client, as a
503 with `Retry-After`, never a 500.

The errors are real PostgreSQL errors: a genuine deadlock between two requests, and,
for the exact count of failures, a trigger that raises the SQLSTATE the first N times
(a sequence counts, since it is not rolled back with the failed transaction).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from uuid import UUID

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import func, select

from app.core.resources import Resources
from app.models import Item, JobStatus
from tests.conftest import RunJobs
from tests.factories import create_account, create_item
from tests.races.common import race

ITEMS = "/api/v1/items"
DEADLOCK, SERIALIZATION_FAILURE, LOCK_NOT_AVAILABLE = "40P01", "40001", "55P03"

_FAULT_FUNCTION = """
CREATE FUNCTION test_inject_fault() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF nextval('test_fault_count') <= TG_ARGV[1]::int THEN
        RAISE EXCEPTION 'injected fault' USING ERRCODE = TG_ARGV[0];
    END IF;
    RETURN NEW;
END $$
"""
# Two transactions that take the same two locks in opposite orders: PostgreSQL detects
# the deadlock (after deadlock_timeout, 1 s by default) and aborts one of them.
_DEADLOCK_FUNCTION = """
CREATE FUNCTION test_lock_crosswise() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.title LIKE 'left%' THEN
        PERFORM pg_advisory_xact_lock(1); PERFORM pg_sleep(0.2); PERFORM pg_advisory_xact_lock(2);
    ELSE
        PERFORM pg_advisory_xact_lock(2); PERFORM pg_sleep(0.2); PERFORM pg_advisory_xact_lock(1);
    END IF;
    RETURN NEW;
END $$
"""
_CLEAN_UP = [
    "DROP TRIGGER IF EXISTS test_fault ON items",
    "DROP TRIGGER IF EXISTS test_fault ON jobs",
    "DROP FUNCTION IF EXISTS test_inject_fault",
    "DROP FUNCTION IF EXISTS test_lock_crosswise",
    "DROP SEQUENCE IF EXISTS test_fault_count",
]

Inject = Callable[..., Awaitable[None]]


@pytest_asyncio.fixture
async def inject(resources: Resources) -> AsyncIterator[Inject]:
    """`await inject(table, sqlstate, times)`: the next `times` writes (`on`) to `table`
    fail with `sqlstate`. With `client`, arm it before the test's transaction writes to
    `table` (the trigger's DDL would wait for that transaction's lock)."""

    async def arm(table: str, sqlstate: str, times: int, *, on: str = "INSERT OR UPDATE") -> None:
        async with resources.engine.begin() as conn:
            for statement in _CLEAN_UP:
                await conn.exec_driver_sql(statement)
            await conn.exec_driver_sql("CREATE SEQUENCE test_fault_count")
            await conn.exec_driver_sql(_FAULT_FUNCTION)
            await conn.exec_driver_sql(
                f"CREATE TRIGGER test_fault BEFORE {on} ON {table} FOR EACH ROW "
                f"EXECUTE FUNCTION test_inject_fault('{sqlstate}', '{times}')"
            )

    try:
        yield arm
    finally:
        async with resources.engine.begin() as conn:
            for statement in _CLEAN_UP:
                await conn.exec_driver_sql(statement)


async def _item_count(resources: Resources, owner_id: UUID) -> int:
    async with resources.sessionmaker() as session:
        count = await session.scalar(select(func.count()).where(Item.owner_id == owner_id))
        return count or 0


@pytest.mark.parametrize("sqlstate", [DEADLOCK, SERIALIZATION_FAILURE, LOCK_NOT_AVAILABLE])
async def test_a_create_that_fails_once_is_run_again_and_succeeds(
    inject: Inject, committed_client: httpx.AsyncClient, committed: Resources, sqlstate: str
) -> None:
    account = await create_account(committed_client)
    before = await committed_client.get("/api/v1/users/me", headers=account.headers)
    await inject("items", sqlstate, 1)
    headers = account.headers | {"Idempotency-Key": f"once-{sqlstate}"}
    body = {"title": "Retried lamp", "price": "4.00"}

    created = await committed_client.post(ITEMS, json=body, headers=headers)

    assert created.status_code == 201, created.text
    assert await _item_count(committed, account.id) == 1
    # The key belongs to the attempt that succeeded: a retry replays its answer.
    replayed = await committed_client.post(ITEMS, json=body, headers=headers)
    assert replayed.status_code == 201
    assert replayed.headers["Idempotent-Replayed"] == "true"
    assert replayed.json()["id"] == created.json()["id"]
    assert await _item_count(committed, account.id) == 1
    # Rate limits counted the retried request once: two requests since `before`.
    remaining = int(before.headers["RateLimit-Remaining"])
    assert int(replayed.headers["RateLimit-Remaining"]) == remaining - 2


async def test_a_second_failure_answers_503_and_frees_the_idempotency_key(
    inject: Inject, committed_client: httpx.AsyncClient, committed: Resources
) -> None:
    account = await create_account(committed_client)
    await inject("items", SERIALIZATION_FAILURE, 2)
    headers = account.headers | {"Idempotency-Key": "twice"}
    body = {"title": "Unlucky lamp", "price": "4.00"}

    refused = await committed_client.post(ITEMS, json=body, headers=headers)

    assert refused.status_code == 503
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.headers["Retry-After"] == "1"
    assert refused.json()["type"] == "urn:problem:service-unavailable"
    assert "injected" not in refused.text
    assert await _item_count(committed, account.id) == 0
    # Nothing was kept: the client's retry with the same key creates the item.
    created = await committed_client.post(ITEMS, json=body, headers=headers)
    assert created.status_code == 201
    assert "Idempotent-Replayed" not in created.headers
    assert await _item_count(committed, account.id) == 1


async def test_an_update_that_fails_once_is_applied_once(
    inject: Inject, committed_client: httpx.AsyncClient, committed: Resources
) -> None:
    account = await create_account(committed_client)
    item = await create_item(committed_client, account, title="Old", price="1.00")
    await inject("items", DEADLOCK, 1)

    changed = await committed_client.patch(
        f"{ITEMS}/{item['id']}",
        json={"title": "New"},
        headers=account.headers,
    )

    assert changed.status_code == 200, changed.text
    async with committed.sessionmaker() as session:
        stored = await session.get_one(Item, UUID(item["id"]))
    assert stored.title == "New"
    assert changed.json()["title"] == "New"


async def test_two_requests_that_deadlock_both_succeed(
    committed_client: httpx.AsyncClient, committed: Resources
) -> None:
    """A real deadlock: PostgreSQL aborts one of the two, which runs again once the
    other committed. Both clients get their 201."""
    account = await create_account(committed_client)
    async with committed.engine.begin() as conn:
        for statement in _CLEAN_UP:
            await conn.exec_driver_sql(statement)
        await conn.exec_driver_sql(_DEADLOCK_FUNCTION)
        await conn.exec_driver_sql(
            "CREATE TRIGGER test_fault BEFORE INSERT ON items FOR EACH ROW "
            "EXECUTE FUNCTION test_lock_crosswise()"
        )
    try:
        trials = 3  # each deadlock waits out deadlock_timeout (1 s)
        for trial in range(trials):
            responses = await race(
                committed_client.post(
                    ITEMS, json={"title": f"left {trial}", "price": "1"}, headers=account.headers
                ),
                committed_client.post(
                    ITEMS, json={"title": f"right {trial}", "price": "1"}, headers=account.headers
                ),
                trial=trial,
            )
            assert [r.status_code for r in responses] == [201, 201], f"trial {trial}"
            assert await _item_count(committed, account.id) == 2 * (trial + 1)
    finally:
        async with committed.engine.begin() as conn:
            for statement in _CLEAN_UP:
                await conn.exec_driver_sql(statement)


async def test_a_job_that_fails_once_is_retried_and_completes(
    inject: Inject, client: httpx.AsyncClient, run_jobs: RunJobs, caplog: pytest.LogCaptureFixture
) -> None:
    await inject("jobs", DEADLOCK, 1, on="UPDATE")  # the worker's first update fails
    account = await create_account(client)
    await create_item(client, account)
    await run_jobs()  # the welcome email
    accepted = await client.post(f"{ITEMS}/exports", headers=account.headers)
    assert accepted.status_code == 202

    assert await run_jobs() == 1

    job = await client.get(accepted.json()["status_url"], headers=account.headers)
    assert job.json()["status"] == JobStatus.complete.value
    assert job.json()["result"]["rows"] == 1
    ends = [r.getMessage() for r in caplog.records if r.getMessage().startswith("job end items")]
    assert [" ".join(end.split()[4:6]) for end in ends] == [
        "try=1 outcome=retry",
        "try=2 outcome=complete",
    ]


@pytest.mark.parametrize("sqlstate", ["XX000", "26000", "08P01"])
async def test_any_other_database_error_answers_503_never_500(
    inject: Inject, committed_client: httpx.AsyncClient, committed: Resources, sqlstate: str
) -> None:
    """An internal error of the server, a prepared statement a pooler lost, a protocol
    violation: the database's trouble, answered as unavailable."""
    account = await create_account(committed_client)
    await inject("items", sqlstate, 1)
    refused = await committed_client.post(
        ITEMS, json={"title": "Unlucky", "price": "1"}, headers=account.headers
    )
    assert refused.status_code == 503
    assert refused.headers["content-type"] == "application/problem+json"
    assert "Retry-After" in refused.headers
    assert "injected" not in refused.text
    assert await _item_count(committed, account.id) == 0
