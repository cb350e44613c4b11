"""Idempotency-Key on uploads: one effect per key, whatever the multipart boundary."""

from __future__ import annotations

import asyncio

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import Settings
from app.core.resources import Resources
from app.models import StoredFile
from tests.factories import create_account
from tests.files.conftest import PNG, stored_paths, upload


async def _files(db: AsyncSession) -> int:
    return int(await db.scalar(select(func.count()).select_from(StoredFile)) or 0)


async def test_a_repeated_upload_replays_the_first_answer_and_stores_nothing(
    client: httpx.AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    account = await create_account(client)
    key = {"Idempotency-Key": "upload-1"}
    parts = [("a.png", PNG, "image/png"), ("b.txt", b"hello\n", "text/plain")]
    first = await upload(client, account, parts, description="both", headers=key)
    stored = stored_paths(settings)
    # httpx picks a new multipart boundary for every request: the bodies differ.
    again = await upload(client, account, parts, description="both", headers=key)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert await _files(db) == 2
    assert stored_paths(settings) == stored


async def test_the_same_key_with_other_files_is_422(client: httpx.AsyncClient) -> None:
    account = await create_account(client)
    key = {"Idempotency-Key": "upload-2"}
    first = await upload(client, account, [("a.txt", b"one", "text/plain")], headers=key)
    other = await upload(client, account, [("a.txt", b"two", "text/plain")], headers=key)
    assert first.status_code == 201
    assert other.status_code == 422
    assert other.json()["type"] == "urn:problem:idempotency-key-reused"


async def test_a_refused_upload_frees_its_key(client: httpx.AsyncClient) -> None:
    account = await create_account(client)
    key = {"Idempotency-Key": "upload-3"}
    refused = await upload(client, account, [("x.png", b"not a png", "image/png")], headers=key)
    assert refused.status_code == 415
    fixed = await upload(client, account, [("x.png", PNG, "image/png")], headers=key)
    assert fixed.status_code == 201


async def test_concurrent_uploads_with_one_key_store_one_file(
    committed_client: httpx.AsyncClient, committed: Resources, settings: Settings
) -> None:
    account = await create_account(committed_client)
    before = stored_paths(settings)
    key = {"Idempotency-Key": "upload-4"}
    body = b"same bytes\n" * 20_000
    answers = await asyncio.gather(
        *(
            upload(committed_client, account, [("a.txt", body, "text/plain")], headers=key)
            for _ in range(8)
        )
    )
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses.count(201) >= 1
    assert set(statuses) <= {201, 409}
    created = {answer.json()[0]["id"] for answer in answers if answer.status_code == 201}
    assert len(created) == 1  # replays carry the first upload's id
    assert len(stored_paths(settings) - before) == 1
