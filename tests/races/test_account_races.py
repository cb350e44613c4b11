"""Races on what an account owns: its API keys, and its items while it is deleted."""

from __future__ import annotations

import random
from uuid import UUID

import httpx
from sqlalchemy import func, select

from app.core.resources import Resources
from app.models import ApiKey, Item, User
from tests.factories import create_account, create_item
from tests.races.common import TRIALS, later, race

KEYS = "/api/v1/users/me/api-keys"
ITEMS = "/api/v1/items"
ME = "/api/v1/users/me"


async def _key_ids(resources: Resources, user_id: UUID) -> set[str]:
    async with resources.sessionmaker() as session:
        ids = await session.scalars(select(ApiKey.id).where(ApiKey.user_id == user_id))
        return {str(key_id) for key_id in ids}


async def test_concurrent_key_creates_and_revokes_add_up(
    committed_client: httpx.AsyncClient, committed: Resources
) -> None:
    """Key creates/revokes at once: stored = before + 201s - 204s; a double revoke: 204 + 404."""
    account = await create_account(committed_client)
    for n in range(4):
        created = await committed_client.post(
            KEYS, json={"name": f"seed {n}", "scopes": ["items:read"]}, headers=account.headers
        )
        assert created.status_code == 201, created.text
    choose = random.Random(8)
    for trial in range(TRIALS):
        before = await _key_ids(committed, account.id)
        # Between 2 and 8 requests; the account stays well under its cap of keys.
        doubled, *revoked = choose.sample(sorted(before), choose.randint(1, min(3, len(before))))
        creates = choose.randint(0 if len(before) > 8 else 1, 3)
        kinds = ["create"] * creates + ["revoke"] * len(revoked) + ["twice"] * 2
        choose.shuffle(kinds)
        remaining = list(revoked)
        requests = []
        for kind in kinds:
            if kind == "create":
                body = {"name": f"trial {trial}", "scopes": ["items:read"]}
                requests.append(committed_client.post(KEYS, json=body, headers=account.headers))
            else:
                key_id = doubled if kind == "twice" else remaining.pop()
                requests.append(
                    committed_client.delete(f"{KEYS}/{key_id}", headers=account.headers)
                )
        responses = await race(*requests, trial=trial)
        codes = [r.status_code for r in responses]
        pairs = list(zip(kinds, codes, strict=True))
        by_kind: dict[str, list[int]] = {"create": [], "revoke": [], "twice": []}
        for kind, code in pairs:
            by_kind[kind].append(code)
        assert by_kind["create"] == [201] * creates, f"trial {trial}: {pairs}"
        assert by_kind["revoke"] == [204] * len(revoked), f"trial {trial}: {pairs}"
        assert sorted(by_kind["twice"]) == [204, 404], f"trial {trial}: {pairs}"
        new = {r.json()["id"] for kind, r in zip(kinds, responses, strict=True) if kind == "create"}
        after = await _key_ids(committed, account.id)
        assert after == (before - {doubled, *revoked}) | new, f"trial {trial}"
        assert len(after) == len(before) + creates - len(revoked) - 1, f"trial {trial}"


async def test_deleting_an_account_while_its_items_are_written_leaves_nothing(
    committed_client: httpx.AsyncClient, committed: Resources
) -> None:
    """DELETE /users/me amid 1-7 item POSTs/PATCHes: no 5xx; the account and its items are gone."""
    choose = random.Random(9)
    for trial in range(TRIALS):
        account = await create_account(committed_client)
        items = [await create_item(committed_client, account) for _ in range(2)]
        writes = 1 + trial % 7
        kinds = [choose.choice(["post", "patch"]) for _ in range(writes)]
        requests = []
        for n, kind in enumerate(kinds):
            # Spread over the deletion's run (tens of ms): before, during and after it.
            delay = choose.uniform(0, 0.05)
            if kind == "post":
                body = {"title": f"new {trial}-{n}", "price": "1.00", "tags": [f"del-{n % 3}"]}
                requests.append(
                    later(delay, committed_client.post(ITEMS, json=body, headers=account.headers))
                )
            else:
                target = items[n % len(items)]["id"]
                body = {"title": f"changed {trial}-{n}", "tags": [f"del-{n % 3}", "other"]}
                requests.append(
                    later(
                        delay,
                        committed_client.patch(
                            f"{ITEMS}/{target}", json=body, headers=account.headers
                        ),
                    )
                )
        at = choose.randrange(writes + 1)
        requests.insert(
            at,
            committed_client.request(
                "DELETE", ME, json={"current_password": account.password}, headers=account.headers
            ),
        )
        responses = await race(*requests, trial=trial)
        deleted = responses.pop(at)
        assert deleted.status_code == 204, f"trial {trial}: {deleted.text}"
        codes = [r.status_code for r in responses]
        pairs = list(zip(kinds, codes, strict=True))
        for kind, code in pairs:
            allowed = {201 if kind == "post" else 200, 401, 404, 409}
            assert code in allowed, f"trial {trial}: {pairs}"
        async with committed.sessionmaker() as session:
            user = await session.get(User, account.id)
            owned = await session.scalar(
                select(func.count()).select_from(Item).where(Item.owner_id == account.id)
            )
            written = [UUID(r.json()["id"]) for r in responses if r.status_code in {200, 201}]
            left = await session.scalar(
                select(func.count())
                .select_from(Item)
                .where(Item.id.in_([*written, *(UUID(i["id"]) for i in items)]))
            )
        assert (user, owned, left) == (None, 0, 0), f"trial {trial}: {pairs}"
        gone = await committed_client.get(ITEMS, headers=account.headers)
        assert gone.status_code == 401, f"trial {trial}"
