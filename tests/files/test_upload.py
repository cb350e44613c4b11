"""POST /api/v1/files: streamed to storage, checked while it streams."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import Settings
from app.models import StoredFile
from tests.conftest import TEST_FILES
from tests.factories import create_account
from tests.files.conftest import (
    FILES,
    PDF,
    PNG,
    RawPart,
    multipart,
    sha256,
    stored_paths,
    upload,
)

LIMIT = TEST_FILES["max_file_bytes"]
A_FILE: RawPart = ("files", "a.txt", "text/plain", b"a")


async def test_several_files_with_a_description(
    client: httpx.AsyncClient, settings: Settings, db: AsyncSession
) -> None:
    account = await create_account(client)
    notes = b"line one\nline two\n"
    response = await upload(
        client,
        account,
        [("photo.png", PNG, "image/png"), ("notes.txt", notes, "text/plain")],
        description="From the trip",
    )
    assert response.status_code == 201, response.text
    photo, text = response.json()
    assert set(photo) == {
        "id", "filename", "content_type", "size", "sha256", "description", "created_at",
    }  # fmt: skip
    assert (photo["filename"], photo["content_type"], photo["size"], photo["sha256"]) == (
        "photo.png", "image/png", len(PNG), sha256(PNG),
    )  # fmt: skip
    assert (text["filename"], text["size"], text["sha256"]) == ("notes.txt", 14 + 4, sha256(notes))
    assert photo["description"] == text["description"] == "From the trip"

    stored = await db.scalar(select(StoredFile).where(StoredFile.id == photo["id"]))
    assert stored is not None
    assert stored.storage_key != "photo.png"  # a generated name, never the client's
    assert (settings.storage_dir / stored.storage_key).read_bytes() == PNG
    listed = await client.get(FILES, headers=account.headers)
    assert [file["id"] for file in listed.json()["items"]] == [text["id"], photo["id"]]


async def test_a_file_over_the_limit_is_413_at_once_and_leaves_nothing(
    client: httpx.AsyncClient, settings: Settings, db: AsyncSession
) -> None:
    account = await create_account(client)
    before = stored_paths(settings)
    sent: list[int] = []
    chunk = b"x" * 16_384

    async def body() -> AsyncIterator[bytes]:
        boundary = b"--bound\r\n"
        yield boundary + b'Content-Disposition: form-data; name="files"; filename="a.txt"\r\n'
        yield b"Content-Type: text/plain\r\n\r\n"
        for _ in range(3 * LIMIT // len(chunk)):
            sent.append(len(chunk))
            yield chunk
        yield b"\r\n--bound--\r\n"

    response = await client.post(
        FILES,
        content=body(),
        headers=account.headers | {"Content-Type": "multipart/form-data; boundary=bound"},
    )
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    # It stopped reading right after the limit, not at the end of the body.
    assert LIMIT < sum(sent) <= LIMIT + 3 * len(chunk)
    assert stored_paths(settings) == before
    assert await db.scalar(select(func.count()).select_from(StoredFile)) == 0


async def test_a_request_over_the_upload_limit_is_refused_before_it_is_read(
    client: httpx.AsyncClient,
) -> None:
    account = await create_account(client)
    read = False

    async def body() -> AsyncIterator[bytes]:
        nonlocal read
        read = True
        yield b"never"

    too_big = str(TEST_FILES["max_request_bytes"] + 1)
    response = await client.post(
        FILES,
        content=body(),
        headers=account.headers
        | {"Content-Type": "multipart/form-data; boundary=b", "Content-Length": too_big},
    )
    assert response.status_code == 413
    assert not read


async def test_the_global_limit_still_holds_everywhere_else(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    account = await create_account(client)
    response = await client.post(
        "/api/v1/items",
        content=b"{}",
        headers=account.headers
        | {"Content-Type": "application/json", "Content-Length": str(settings.max_body_bytes + 1)},
    )
    assert response.status_code == 413


@pytest.mark.parametrize(
    ("part", "reason"),
    [
        (("setup.exe", b"MZ\x90\x00", "application/x-msdownload"), "type not allowed"),
        (("photo.png", b"<html><script>alert(1)</script>", "image/png"), "lying type"),
        (("doc.pdf", PNG, "application/pdf"), "another allowed type's bytes"),
        (("data.txt", b"\x00\x01\x02binary", "text/plain"), "binary as text"),
        (("notes.txt", b"caf\xe9", "text/plain"), "not UTF-8"),
        (("x.png", b"", "image/png"), "empty image"),
    ],
)
async def test_a_type_not_allowed_or_not_matching_the_bytes_is_415(
    client: httpx.AsyncClient, settings: Settings, part: tuple[str, bytes, str], reason: str
) -> None:
    account = await create_account(client)
    before = stored_paths(settings)
    response = await upload(client, account, [("fine.pdf", PDF, "application/pdf"), part])
    assert response.status_code == 415, reason
    assert response.json()["type"] == "urn:problem:unsupported-media-type"
    # The first, acceptable file of the same request is gone too.
    assert stored_paths(settings) == before


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\report.txt", "report.txt"),
        ("bad\x00na\x07me\t.txt", "bad_na_me_.txt"),
        ('say "hi".txt', "say _hi_.txt"),
        ("...", "file"),
        ("résumé.txt", "résumé.txt"),
        ("a" * 300 + ".txt", "a" * 251 + ".txt"),
    ],
)
async def test_filenames_are_kept_as_safe_metadata(
    client: httpx.AsyncClient, sent: str, kept: str
) -> None:
    account = await create_account(client)
    body, content_type = multipart([("files", sent, "text/plain", b"hello")])
    response = await client.post(
        FILES, content=body, headers=account.headers | {"Content-Type": content_type}
    )
    assert response.status_code == 201, response.text
    assert response.json()[0]["filename"] == kept


@pytest.mark.parametrize(
    ("parts", "field"),
    [
        ([("description", None, None, b"no file")], "files"),
        (
            [("files", "a.txt", "text/plain", b"a"), ("avatar", "b.txt", "text/plain", b"b")],
            "avatar",
        ),
        ([("files", None, None, b"a file field without a filename")], "files"),
        (
            [("files", "a.txt", "text/plain", b"a"), ("description", None, None, b"x" * 1001)],
            "description",
        ),
        (
            [("files", "a.txt", "text/plain", b"a"), ("description", None, None, b"\xff\xfe")],
            "description",
        ),
    ],
)
async def test_malformed_forms_are_422(
    client: httpx.AsyncClient, parts: list[RawPart], field: str
) -> None:
    account = await create_account(client)
    body, content_type = multipart(parts)
    response = await client.post(
        FILES, content=body, headers=account.headers | {"Content-Type": content_type}
    )
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == field


async def test_too_many_files_is_422(client: httpx.AsyncClient, settings: Settings) -> None:
    account = await create_account(client)
    before = stored_paths(settings)
    parts = [
        (f"{n}.txt", b"n", "text/plain") for n in range(TEST_FILES["max_files_per_request"] + 1)
    ]
    response = await upload(client, account, parts)
    assert response.status_code == 422
    assert stored_paths(settings) == before


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", b"{}"),
        ("multipart/form-data", b"no boundary"),
        ("multipart/form-data; boundary=b", b"--b\r\nno headers end"),
    ],
)
async def test_a_body_that_is_not_a_multipart_form_is_refused(
    client: httpx.AsyncClient, content_type: str, body: bytes
) -> None:
    account = await create_account(client)
    response = await client.post(
        FILES, content=body, headers=account.headers | {"Content-Type": content_type}
    )
    assert response.status_code in (400, 422), response.text
    assert response.headers["content-type"] == "application/problem+json"


async def test_uploads_need_authentication(client: httpx.AsyncClient) -> None:
    response = await client.post(FILES, files=[("files", ("a.txt", b"a", "text/plain"))])
    assert response.status_code == 401


async def test_concurrent_uploads_each_land_once(
    committed_client: httpx.AsyncClient, settings: Settings
) -> None:
    accounts = [await create_account(committed_client) for _ in range(3)]
    bodies = [f"upload number {n}\n".encode() * (1000 + n) for n in range(12)]
    responses = await asyncio.gather(
        *(
            upload(committed_client, accounts[n % 3], [(f"{n}.txt", body, "text/plain")])
            for n, body in enumerate(bodies)
        )
    )
    assert [response.status_code for response in responses] == [201] * len(bodies)
    for body, response in zip(bodies, responses, strict=True):
        [stored] = response.json()
        assert (stored["size"], stored["sha256"]) == (len(body), sha256(body))
        content = await committed_client.get(
            f"{FILES}/{stored['id']}/content", headers=accounts[bodies.index(body) % 3].headers
        )
        assert content.content == body
