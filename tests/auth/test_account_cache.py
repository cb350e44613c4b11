"""Authentication reads the account from Redis (app.auth.accounts), and every change
that matters is seen at once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from redis.asyncio import Redis
from sqlalchemy import event
from sqlalchemy.engine import Engine

from app.auth.accounts import account_key
from app.bootstrap import ensure_superuser
from app.core.resources import Resources
from tests.factories import PASSWORD, Account, create_account, create_item, login

ME = "/api/v1/users/me"
USERS = "/api/v1/users"


@contextmanager
def statements() -> Iterator[list[str]]:
    """Every SQL statement any engine sends meanwhile (the app's engine is its own,
    built by its lifespan, so the listener is on the Engine class)."""
    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(args[2])

    event.listen(Engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", record)


async def _admin(client: httpx.AsyncClient, resources: Resources) -> Account:
    """An admin made the way an operator does (`app create-admin`)."""
    account = await create_account(client)
    outcome = await ensure_superuser(
        resources.settings, email=account.email, password=SecretStr("unused"), promote=True
    )
    assert outcome == "promoted to admin"
    tokens = (await login(client, account.email, account.password)).json()
    account.access_token, account.refresh_token = tokens["access_token"], tokens["refresh_token"]
    return account


async def test_a_cached_item_read_touches_no_database(
    committed_client: httpx.AsyncClient, committed: Resources
) -> None:
    account = await create_account(committed_client)
    item = await create_item(committed_client, account)
    path = f"/api/v1/items/{item['id']}"
    assert (await committed_client.get(path, headers=account.headers)).status_code == 200
    with statements() as seen:
        response = await committed_client.get(path, headers=account.headers)
    assert response.status_code == 200
    assert response.json()["id"] == item["id"]
    assert seen == []


async def test_the_cached_account_is_the_one_in_the_database(
    committed_client: httpx.AsyncClient, committed: Resources, redis: Redis
) -> None:
    account = await create_account(committed_client)
    assert (await committed_client.get(ME, headers=account.headers)).status_code == 200
    cached = await redis.get(account_key(account.id))
    assert cached == "0|user|1"  # token_version 0, role user, active


async def test_demoting_an_admin_ends_their_admin_access_at_once(
    committed_client: httpx.AsyncClient, committed: Resources
) -> None:
    admin = await _admin(committed_client, committed)
    other = await _admin(committed_client, committed)
    listing = await committed_client.get(USERS, headers=admin.headers)
    assert listing.status_code == 200  # the account entry is cached now
    demoted = await committed_client.patch(
        f"{USERS}/{admin.id}", json={"role": "user"}, headers=other.headers
    )
    assert demoted.status_code == 200
    # The token issued while they were an admin is refused...
    assert (await committed_client.get(USERS, headers=admin.headers)).status_code == 401
    # ...and the one their refresh token gets carries the new role.
    refreshed = await committed_client.post(
        "/api/v1/auth/refresh", json={"refresh_token": admin.refresh_token}
    )
    assert refreshed.status_code == 200
    headers = {"Authorization": f"Bearer {refreshed.json()['access_token']}"}
    assert (await committed_client.get(USERS, headers=headers)).status_code == 403
    assert (await committed_client.get(ME, headers=headers)).json()["role"] == "user"


async def test_a_promotion_takes_effect_with_the_next_token(
    committed_client: httpx.AsyncClient, committed: Resources
) -> None:
    admin = await _admin(committed_client, committed)
    account = await create_account(committed_client)
    assert (await committed_client.get(USERS, headers=account.headers)).status_code == 403
    promoted = await committed_client.patch(
        f"{USERS}/{account.id}", json={"role": "admin"}, headers=admin.headers
    )
    assert promoted.status_code == 200
    refreshed = await committed_client.post(
        "/api/v1/auth/refresh", json={"refresh_token": account.refresh_token}
    )
    headers = {"Authorization": f"Bearer {refreshed.json()['access_token']}"}
    assert (await committed_client.get(USERS, headers=headers)).status_code == 200


async def test_a_deleted_account_is_refused_although_it_was_cached(
    committed_client: httpx.AsyncClient, committed: Resources, redis: Redis
) -> None:
    account = await create_account(committed_client)
    assert (await committed_client.get(ME, headers=account.headers)).status_code == 200
    deleted = await committed_client.request(
        "DELETE", ME, json={"current_password": PASSWORD}, headers=account.headers
    )
    assert deleted.status_code == 204
    assert (await committed_client.get(ME, headers=account.headers)).status_code == 401
    items = await committed_client.get("/api/v1/items", headers=account.headers)
    assert items.status_code == 401


async def test_a_stale_entry_does_not_refuse_a_newer_token(
    committed_client: httpx.AsyncClient, committed: Resources, redis: Redis
) -> None:
    """An entry behind the database (its write after a commit was lost) sends a token
    newer than it to PostgreSQL instead of refusing it."""
    account = await create_account(committed_client)
    assert (await committed_client.get(ME, headers=account.headers)).status_code == 200
    changed = await committed_client.patch(
        ME,
        json={"current_password": account.password, "password": "another-horse-2"},
        headers=account.headers,
    )
    assert changed.status_code == 200
    await redis.set(account_key(account.id), "0|user|1")  # as if the write had failed
    tokens = (await login(committed_client, account.email, "another-horse-2")).json()
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert (await committed_client.get(ME, headers=headers)).status_code == 200
    assert await redis.get(account_key(account.id)) == "1|user|1"


async def test_a_cached_item_comes_back_with_authentication_in_one_round_trip(
    committed_client: httpx.AsyncClient, committed: Resources, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = await create_account(committed_client)
    item = await create_item(committed_client, account)
    path = f"/api/v1/items/{item['id']}"
    first = await committed_client.get(path, headers=account.headers)
    commands: list[str] = []
    execute: Callable[..., Awaitable[Any]] = Redis.execute_command

    async def recording(self: Redis, *args: Any, **options: Any) -> Any:
        commands.append(str(args[0]).upper())
        return await execute(self, *args, **options)

    monkeypatch.setattr(Redis, "execute_command", recording)
    second = await committed_client.get(path, headers=account.headers)
    monkeypatch.undo()
    assert second.status_code == 200
    assert second.content == first.content
    assert second.headers["etag"] == first.headers["etag"]
    assert commands.count("MGET") == 1
    assert "GET" not in commands
