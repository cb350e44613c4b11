"""POST/DELETE /api/v1/items/{id}/attachments: items list their files."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from app.items import repository as item_repository
from tests.factories import Account, create_account, create_admin, create_item
from tests.files.conftest import FILES, PNG, upload_one


def attachments_of(item_id: str) -> str:
    return f"/api/v1/items/{item_id}/attachments"


async def attach(
    client: httpx.AsyncClient, account: Account, item: dict[str, Any], file: dict[str, Any]
) -> httpx.Response:
    return await client.post(
        attachments_of(item["id"]), json={"file_id": file["id"]}, headers=account.headers
    )


async def test_an_attached_file_shows_in_the_item_and_moves_its_etag(
    client: httpx.AsyncClient,
) -> None:
    account = await create_account(client)
    item = await create_item(client, account)
    file = await upload_one(client, account, ("photo.png", PNG, "image/png"))

    attached = await attach(client, account, item, file)
    assert attached.status_code == 201
    body = attached.json()
    assert body["attachments"] == [file]
    assert body["version"] == item["version"] + 1
    assert attached.headers["etag"] == f'"{body["version"]}"'
    read = await client.get(f"/api/v1/items/{item['id']}", headers=account.headers)
    assert read.json() == body
    listed = await client.get("/api/v1/items", headers=account.headers)
    assert listed.json()["items"][0]["attachments"] == [file]

    again = await attach(client, account, item, file)
    assert again.status_code == 200
    assert again.json() == body  # nothing changed


async def test_detaching_keeps_the_file(client: httpx.AsyncClient) -> None:
    account = await create_account(client)
    item = await create_item(client, account)
    file = await upload_one(client, account, ("a.txt", b"a", "text/plain"))
    version = (await attach(client, account, item, file)).json()["version"]
    attachment = f"{attachments_of(item['id'])}/{file['id']}"
    detached = await client.delete(attachment, headers=account.headers)
    assert detached.status_code == 204
    read = (await client.get(f"/api/v1/items/{item['id']}", headers=account.headers)).json()
    assert (read["attachments"], read["version"]) == ([], version + 1)
    still = await client.get(f"{FILES}/{file['id']}", headers=account.headers)
    assert still.status_code == 200
    gone = await client.delete(
        f"{attachments_of(item['id'])}/{file['id']}", headers=account.headers
    )
    assert gone.status_code == 404


async def test_deleting_a_file_detaches_it_from_its_items(client: httpx.AsyncClient) -> None:
    account = await create_account(client)
    item = await create_item(client, account)
    file = await upload_one(client, account, ("a.txt", b"a", "text/plain"))
    version = (await attach(client, account, item, file)).json()["version"]
    await client.delete(f"{FILES}/{file['id']}", headers=account.headers)
    read = (await client.get(f"/api/v1/items/{item['id']}", headers=account.headers)).json()
    assert (read["attachments"], read["version"]) == ([], version + 1)


async def test_another_users_file_or_item_is_404(client: httpx.AsyncClient) -> None:
    owner, other = await create_account(client), await create_account(client)
    item = await create_item(client, owner)
    theirs = await upload_one(client, other, ("a.txt", b"a", "text/plain"))
    assert (await attach(client, owner, item, theirs)).status_code == 404
    mine = await upload_one(client, owner, ("b.txt", b"b", "text/plain"))
    assert (await attach(client, other, item, mine)).status_code == 404
    response = await client.delete(
        f"{attachments_of(item['id'])}/{mine['id']}", headers=other.headers
    )
    assert response.status_code == 404


async def test_an_admin_cannot_mix_accounts(client: httpx.AsyncClient, db: AsyncSession) -> None:
    admin, user = await create_admin(client, db), await create_account(client)
    item = await create_item(client, user)
    admins_file = await upload_one(client, admin, ("a.txt", b"a", "text/plain"))
    response = await attach(client, admin, item, admins_file)
    assert response.status_code == 409


async def test_if_match_guards_attaching(client: httpx.AsyncClient) -> None:
    account = await create_account(client)
    item = await create_item(client, account)
    file = await upload_one(client, account, ("a.txt", b"a", "text/plain"))
    stale = await client.post(
        attachments_of(item["id"]),
        json={"file_id": file["id"]},
        headers=account.headers | {"If-Match": '"99"'},
    )
    assert stale.status_code == 412


async def test_attachments_per_item_are_limited(client: httpx.AsyncClient, settings: Any) -> None:
    account = await create_account(client)
    item = await create_item(client, account)
    limit = settings.files.max_attachments_per_item
    for n in range(limit):
        file = await upload_one(client, account, (f"{n}.txt", b"n", "text/plain"))
        assert (await attach(client, account, item, file)).status_code == 201
    extra = await upload_one(client, account, ("extra.txt", b"x", "text/plain"))
    refused = await attach(client, account, item, extra)
    assert refused.status_code == 409


async def test_the_body_refuses_unknown_fields(client: httpx.AsyncClient) -> None:
    account = await create_account(client)
    item = await create_item(client, account)
    response = await client.post(
        attachments_of(item["id"]),
        json={"file_id": "00000000-0000-7000-8000-000000000000", "owner_id": "x"},
        headers=account.headers,
    )
    assert response.status_code == 422


async def test_a_file_deleted_while_it_is_being_attached_leaves_no_stale_item(
    committed_client: httpx.AsyncClient, committed: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The attach has written its link but not committed when the delete looks for the
    file's items: the delete must wait for it and then detach, moving the version on."""
    account = await create_account(committed_client)
    item = await create_item(committed_client, account)
    file = await upload_one(committed_client, account, ("a.txt", b"a", "text/plain"))
    save = item_repository.save

    async def slow_save(session: AsyncSession, *, precondition_sent: bool) -> None:
        await save(session, precondition_sent=precondition_sent)
        await asyncio.sleep(0.3)  # the link row is written, the commit is still to come

    monkeypatch.setattr(item_repository, "save", slow_save)

    async def delete_meanwhile() -> httpx.Response:
        await asyncio.sleep(0.1)
        return await committed_client.delete(f"{FILES}/{file['id']}", headers=account.headers)

    attached, deleted = await asyncio.gather(
        attach(committed_client, account, item, file), delete_meanwhile()
    )
    monkeypatch.undo()
    assert attached.status_code == 201
    assert deleted.status_code == 204
    read = await committed_client.get(f"/api/v1/items/{item['id']}", headers=account.headers)
    assert read.json()["attachments"] == []
    assert read.json()["version"] == attached.json()["version"] + 1
