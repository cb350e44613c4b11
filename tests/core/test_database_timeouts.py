"""A statement that runs too long, and the breaker that fails fast while PostgreSQL does
not answer (a hung server itself is in tests/faults/test_postgres_outage.py)."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from app.core.breaker import Breaker, DatabaseUnavailable
from app.core.config import DatabaseSettings, Settings
from app.core.resources import Resources
from tests.conftest import app_client
from tests.factories import create_account, create_item

STATEMENT_TIMEOUT_MS = 300


def _with_statement_timeout(settings: Settings) -> Settings:
    database = DatabaseSettings(
        _env_file=None, url=settings.database.url, statement_timeout_ms=STATEMENT_TIMEOUT_MS
    )
    return settings.model_copy(update={"database": database})


async def test_a_statement_past_the_timeout_is_a_503_and_only_that_request_fails(
    settings: Settings, committed: Resources
) -> None:
    async with app_client(_with_statement_timeout(settings)) as http:
        account = await create_account(http)
        item = await create_item(http, account)
        # Another transaction holds the item's row: the update waits for it until the
        # server cancels the statement.
        async with committed.engine.connect() as holder:
            await holder.execute(
                text("SELECT 1 FROM items WHERE id = :id FOR UPDATE"), {"id": item["id"]}
            )
            blocked = await http.patch(
                f"/api/v1/items/{item['id']}", json={"title": "Blue lamp"}, headers=account.headers
            )
            # A slow statement is not an outage: the next request is served at once.
            listed = await http.get("/api/v1/items", headers=account.headers)
            await holder.rollback()

        assert blocked.status_code == 503, blocked.text
        assert blocked.headers["content-type"].startswith("application/problem+json")
        assert blocked.json()["type"] == "urn:problem:service-unavailable"
        assert blocked.headers["retry-after"] == "5"
        assert listed.status_code == 200
        stored = await http.get(f"/api/v1/items/{item['id']}", headers=account.headers)
        assert stored.json()["title"] == "Red lamp"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_breaker_fails_fast_then_lets_one_trial_through() -> None:
    clock = Clock()
    breaker = Breaker(0.5, clock=clock)
    breaker.before()  # closed: everything passes
    breaker.before()

    breaker.failed()
    clock.now += 0.4
    with pytest.raises(DatabaseUnavailable):
        breaker.before()

    clock.now += 0.2  # the cooldown is over: one trial, the others still wait
    breaker.before()
    breaker.raise_if_open()  # the trial may go on to connect
    for _ in range(2):
        with pytest.raises(DatabaseUnavailable):
            breaker.before()

    breaker.failed()  # the trial failed: open again, for a whole cooldown
    clock.now += 0.4
    with pytest.raises(DatabaseUnavailable):
        breaker.raise_if_open()

    clock.now += 0.2
    breaker.before()
    breaker.succeeded()  # the trial worked: closed
    assert not breaker.is_open
    breaker.before()
    breaker.before()


def test_a_trial_that_never_reports_back_does_not_block_forever() -> None:
    clock = Clock()
    breaker = Breaker(0.5, clock=clock)
    breaker.failed()
    clock.now += 0.6
    breaker.before()  # the trial starts, and is cancelled before it reports
    clock.now += 0.6
    breaker.before()  # another may try
