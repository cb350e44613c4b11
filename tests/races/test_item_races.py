"""Races on one item: PUT, tag changes, attachments. One serial order must explain
what is stored, and every loser is told so (409/412), never a 5xx."""

from __future__ import annotations

import random
from typing import Any
from uuid import UUID

import httpx
from sqlalchemy import func, select

from app.core.resources import Resources
from app.models import Item, Tag, item_attachments, item_tags
from tests.factories import create_account, create_item
from tests.files.conftest import upload_one
from tests.races.common import TRIALS, race, statuses

ITEMS = "/api/v1/items"


async def _stored(resources: Resources, item_id: str) -> tuple[int, str, list[str]]:
    """The item's version, title and tag names (sorted), from the database."""
    async with resources.sessionmaker() as session:
        row = (
            await session.execute(select(Item.version, Item.title).where(Item.id == UUID(item_id)))
        ).one()
        names = await session.scalars(
            select(Tag.name)
            .join(item_tags, item_tags.c.tag_id == Tag.id)
            .where(item_tags.c.item_id == UUID(item_id))
            .order_by(Tag.name)
        )
        return row.version, row.title, list(names)


async def _tag_rows(resources: Resources, item_id: str) -> tuple[int, list[str]]:
    """The item's link rows, and every tag name stored more than once."""
    async with resources.sessionmaker() as session:
        links = await session.scalar(
            select(func.count()).select_from(item_tags).where(item_tags.c.item_id == UUID(item_id))
        )
        doubled = await session.scalars(
            select(Tag.name).group_by(Tag.name).having(func.count() > 1)
        )
        return int(links or 0), list(doubled)


async def test_puts_with_one_if_match_have_one_winner(
    committed_client: httpx.AsyncClient, committed: Resources
) -> None:
    """2-8 PUTs with one If-Match: one 200, the rest 412; the winner's body is what is stored."""
    account = await create_account(committed_client)
    item = await create_item(committed_client, account, tags=["start"])
    version = item["version"]
    for trial in range(TRIALS):
        writers = 2 + trial % 7
        bodies = [
            {
                "title": f"put {trial}-{n}",
                "price": f"{n}.50",
                "status": "active",
                "tags": [f"put-{trial}-{n}", "shared", f"put-{trial}-{(n + 1) % writers}"],
            }
            for n in range(writers)
        ]
        headers = account.headers | {"If-Match": f'"{version}"'}
        responses = await race(
            *(
                committed_client.put(f"{ITEMS}/{item['id']}", json=body, headers=headers)
                for body in bodies
            ),
            trial=trial,
        )
        assert statuses(responses) == {200: 1, 412: writers - 1}, f"trial {trial}"
        [won] = [n for n, r in enumerate(responses) if r.status_code == 200]
        answer = responses[won].json()
        version += 1
        assert answer["version"] == version
        assert await _stored(committed, item["id"]) == (
            version,
            bodies[won]["title"],
            sorted(bodies[won]["tags"]),
        ), f"trial {trial}"
        assert answer["tags"] == sorted(bodies[won]["tags"])
        links, doubled = await _tag_rows(committed, item["id"])
        assert (links, doubled) == (3, []), f"trial {trial}"


async def test_concurrent_tag_changes_store_exactly_one_requested_set(
    committed_client: httpx.AsyncClient, committed: Resources
) -> None:
    """2-8 tag PATCHes at once: 200/409/412 only; the last winner's set stored, no stray rows."""
    account = await create_account(committed_client)
    item = await create_item(committed_client, account, tags=["start"])
    choose = random.Random(6)
    for trial in range(TRIALS):
        version, _, _ = await _stored(committed, item["id"])
        writers = 2 + trial % 7
        # Overlapping sets of new and shared names: creating a tag races too.
        pool = [f"tag-{trial}-{n}" for n in range(4)] + ["shared", "common"]
        sets = [sorted({f"own-{trial}-{n}", *choose.sample(pool, 3)}) for n in range(writers)]
        guarded = [choose.random() < 0.5 for _ in range(writers)]
        responses = await race(
            *(
                committed_client.patch(
                    f"{ITEMS}/{item['id']}",
                    json={"tags": tags},
                    headers=account.headers | ({"If-Match": f'"{version}"'} if guard else {}),
                )
                for tags, guard in zip(sets, guarded, strict=True)
            ),
            trial=trial,
        )
        codes = [r.status_code for r in responses]
        for code, guard in zip(codes, guarded, strict=True):
            assert code in ({200, 412} if guard else {200, 409}), f"trial {trial}: {codes}"
        winners = sorted(
            (r.json()["version"], n) for n, r in enumerate(responses) if r.status_code == 200
        )
        assert winners, f"trial {trial}: {codes}"
        # Each winner moved the version on by one, in turn; the last one's set stands.
        assert [v for v, _ in winners] == list(range(version + 1, version + 1 + len(winners))), (
            f"trial {trial}: {winners}"
        )
        last = winners[-1][1]
        stored_version, _, stored_tags = await _stored(committed, item["id"])
        assert (stored_version, stored_tags) == (winners[-1][0], sets[last]), f"trial {trial}"
        links, doubled = await _tag_rows(committed, item["id"])
        assert (links, doubled) == (len(sets[last]), []), f"trial {trial}"


async def _attached(resources: Resources, item_id: str) -> tuple[int, set[str]]:
    async with resources.sessionmaker() as session:
        version = await session.scalar(select(Item.version).where(Item.id == UUID(item_id)))
        files = await session.scalars(
            select(item_attachments.c.file_id).where(item_attachments.c.item_id == UUID(item_id))
        )
        return int(version or 0), {str(file_id) for file_id in files}


async def test_concurrent_attach_and_detach_match_one_serial_order(
    committed_client: httpx.AsyncClient, committed: Resources
) -> None:
    """2-8 attaches/detaches of distinct files on one item at once: no 5xx, and the stored set is
    the start plus each 201, minus each 204."""
    account = await create_account(committed_client)
    item = await create_item(committed_client, account)
    files: list[dict[str, Any]] = [
        await upload_one(
            committed_client, account, (f"{n}.txt", f"file {n}".encode(), "text/plain")
        )
        for n in range(8)
    ]
    attachments = f"{ITEMS}/{item['id']}/attachments"
    choose = random.Random(7)
    for trial in range(TRIALS):
        version, before = await _attached(committed, item["id"])
        chosen = choose.sample(files, 2 + trial % 7)
        guarded = [choose.random() < 0.3 for _ in chosen]
        requests = []
        for file, guard in zip(chosen, guarded, strict=True):
            headers = account.headers | ({"If-Match": f'"{version}"'} if guard else {})
            if file["id"] in before:
                requests.append(
                    committed_client.delete(f"{attachments}/{file['id']}", headers=headers)
                )
            else:
                requests.append(
                    committed_client.post(
                        attachments, json={"file_id": file["id"]}, headers=headers
                    )
                )
        responses = await race(*requests, trial=trial)
        codes = [r.status_code for r in responses]
        expected = set(before)
        for file, guard, code in zip(chosen, guarded, codes, strict=True):
            done = 204 if file["id"] in before else 201
            assert code in {done, 412 if guard else 409}, f"trial {trial}: {codes}"
            if code == 204:
                expected.discard(file["id"])
            elif code == 201:
                expected.add(file["id"])
        successes = sum(code in {201, 204} for code in codes)
        assert successes >= 1, f"trial {trial}: {codes}"
        assert await _attached(committed, item["id"]) == (version + successes, expected), (
            f"trial {trial}: {codes}"
        )
