"""One `Idempotency-Key` used by two processes at once: two app instances sharing
Redis and PostgreSQL, as two workers behind a load balancer would."""

from __future__ import annotations

from uuid import UUID

import httpx
from sqlalchemy import func, select

from app.core.config import Settings
from app.core.idempotency import REPLAYED_HEADER
from app.core.resources import Resources
from app.models import Item
from tests.conftest import app_client
from tests.factories import create_account
from tests.races.common import TRIALS, no_server_errors, race

ITEMS = "/api/v1/items"


async def _titles(resources: Resources, owner_id: UUID) -> list[str]:
    async with resources.sessionmaker() as session:
        titles = await session.scalars(
            select(Item.title).where(Item.owner_id == owner_id).order_by(Item.title)
        )
        return list(titles)


async def test_one_key_from_two_processes_creates_one_item(
    committed_client: httpx.AsyncClient, committed: Resources, settings: Settings
) -> None:
    """One key and body from two apps at once: one item; 201, and a replayed 201 or a 409."""
    account = await create_account(committed_client)
    async with app_client(settings) as other:
        for trial in range(TRIALS):
            headers = account.headers | {"Idempotency-Key": f"same-body-{trial}"}
            body = {"title": f"once {trial:02}", "price": "3.00", "tags": ["idem"]}
            responses = await race(
                committed_client.post(ITEMS, json=body, headers=headers),
                other.post(ITEMS, json=body, headers=headers),
                trial=trial,
            )
            no_server_errors(responses)
            codes = sorted(r.status_code for r in responses)
            assert codes in ([201, 201], [201, 409]), f"trial {trial}: {codes}"
            fresh = [
                r for r in responses if r.status_code == 201 and REPLAYED_HEADER not in r.headers
            ]
            assert len(fresh) == 1, f"trial {trial}: {[dict(r.headers) for r in responses]}"
            if codes == [201, 201]:
                [replay] = [r for r in responses if r is not fresh[0]]
                assert replay.headers[REPLAYED_HEADER] == "true"
                assert replay.json() == fresh[0].json(), f"trial {trial}"
            titles = await _titles(committed, account.id)
            assert titles == [f"once {n:02}" for n in range(trial + 1)], f"trial {trial}"


async def test_one_key_with_two_bodies_from_two_processes_has_one_winner(
    committed_client: httpx.AsyncClient, committed: Resources, settings: Settings
) -> None:
    """One key, two bodies, from two apps at once: one 201 and one 422 (the key stands for
    the other body, in flight or done); one item stored."""
    account = await create_account(committed_client)
    async with app_client(settings) as other:
        for trial in range(TRIALS):
            headers = account.headers | {"Idempotency-Key": f"two-bodies-{trial}"}
            bodies = [
                {"title": f"first {trial:02}", "price": "1.00"},
                {"title": f"second {trial:02}", "price": "2.00"},
            ]
            responses = await race(
                committed_client.post(ITEMS, json=bodies[0], headers=headers),
                other.post(ITEMS, json=bodies[1], headers=headers),
                trial=trial,
            )
            no_server_errors(responses)
            codes = [r.status_code for r in responses]
            assert sorted(codes)[0] == 201, f"trial {trial}: {codes}"
            assert sorted(codes)[1] == 422, f"trial {trial}: {codes}"
            winner = bodies[codes.index(201)]
            assert REPLAYED_HEADER not in responses[codes.index(201)].headers
            async with committed.sessionmaker() as session:
                stored = list(
                    await session.scalars(
                        select(Item.title).where(
                            Item.owner_id == account.id, Item.title.like(f"% {trial:02}")
                        )
                    )
                )
                total = await session.scalar(
                    select(func.count()).select_from(Item).where(Item.owner_id == account.id)
                )
            assert (stored, total) == ([winner["title"]], trial + 1), f"trial {trial}: {codes}"
