"""Metadata, content (ranges, ETags), deletion and ownership of files."""

from __future__ import annotations

import httpx
import pytest

from app.core.config import Settings
from tests.factories import create_account
from tests.files.conftest import FILES, PNG, multipart, sha256, stored_paths, upload_one

TEXT = bytes(range(32, 127)) + b"\n"  # 96 bytes


async def test_metadata_and_content_with_validators(client: httpx.AsyncClient) -> None:
    account = await create_account(client)
    stored = await upload_one(client, account, ("chart.png", PNG, "image/png"))
    read = await client.get(f"{FILES}/{stored['id']}", headers=account.headers)
    assert read.json() == stored

    content = await client.get(f"{FILES}/{stored['id']}/content", headers=account.headers)
    assert content.status_code == 200
    assert content.content == PNG
    assert content.headers["content-type"] == "image/png"
    assert content.headers["content-disposition"] == 'attachment; filename="chart.png"'
    assert content.headers["etag"] == f'"{sha256(PNG)}"'
    assert content.headers["accept-ranges"] == "bytes"
    assert "last-modified" in content.headers
    assert content.headers["x-content-type-options"] == "nosniff"

    head = await client.head(f"{FILES}/{stored['id']}/content", headers=account.headers)
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == str(len(PNG))


async def test_a_matching_if_none_match_is_304(client: httpx.AsyncClient) -> None:
    account = await create_account(client)
    stored = await upload_one(client, account, ("a.txt", TEXT, "text/plain"))
    url = f"{FILES}/{stored['id']}/content"
    etag = (await client.get(url, headers=account.headers)).headers["etag"]
    again = await client.get(url, headers=account.headers | {"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag
    changed = await client.get(url, headers=account.headers | {"If-None-Match": '"other"'})
    assert changed.status_code == 200


@pytest.mark.parametrize(
    ("range_", "status", "body", "content_range"),
    [
        ("bytes=0-9", 206, TEXT[:10], "bytes 0-9/96"),
        ("bytes=-5", 206, TEXT[-5:], "bytes 91-95/96"),
        ("bytes=90-", 206, TEXT[90:], "bytes 90-95/96"),
        ("bytes=0-1000", 206, TEXT, "bytes 0-95/96"),
    ],
)
async def test_ranges(
    client: httpx.AsyncClient, range_: str, status: int, body: bytes, content_range: str
) -> None:
    account = await create_account(client)
    stored = await upload_one(client, account, ("a.txt", TEXT, "text/plain"))
    response = await client.get(
        f"{FILES}/{stored['id']}/content", headers=account.headers | {"Range": range_}
    )
    assert response.status_code == status
    assert response.content == body
    assert response.headers["content-range"] == content_range


async def test_an_unsatisfiable_range_is_416_and_an_unparsable_one_is_ignored(
    client: httpx.AsyncClient,
) -> None:
    account = await create_account(client)
    stored = await upload_one(client, account, ("a.txt", TEXT, "text/plain"))
    url = f"{FILES}/{stored['id']}/content"
    beyond = await client.get(url, headers=account.headers | {"Range": "bytes=500-600"})
    assert beyond.status_code == 416
    assert beyond.headers["content-type"] == "application/problem+json"
    assert beyond.headers["content-range"] == "bytes */96"
    # RFC 9110, 14.2: a Range that cannot be parsed, or in an unknown unit, is ignored.
    for ignored in ("pages=1-2", "items=0-5", "bytes=9-0", "bytes", "bytes=x-y"):
        whole = await client.get(url, headers=account.headers | {"Range": ignored})
        assert (whole.status_code, whole.content) == (200, TEXT), ignored


async def test_too_many_ranges_get_the_whole_file(client: httpx.AsyncClient) -> None:
    """100 one-byte ranges must not multiply the answer: past 8 ranges, a plain 200."""
    account = await create_account(client)
    stored = await upload_one(client, account, ("a.txt", TEXT, "text/plain"))
    url = f"{FILES}/{stored['id']}/content"
    many = ",".join(f"{n}-{n}" for n in range(0, 96, 2))
    whole = await client.get(url, headers=account.headers | {"Range": f"bytes={many}"})
    assert (whole.status_code, whole.content) == (200, TEXT)
    few = ",".join(f"{n}-{n}" for n in range(0, 16, 2))  # 8 ranges: served
    parts = await client.get(url, headers=account.headers | {"Range": f"bytes={few}"})
    assert parts.status_code == 206
    assert parts.headers["content-type"].startswith("multipart/byteranges")


async def test_if_range_with_a_stale_etag_sends_the_whole_file(client: httpx.AsyncClient) -> None:
    account = await create_account(client)
    stored = await upload_one(client, account, ("a.txt", TEXT, "text/plain"))
    url = f"{FILES}/{stored['id']}/content"
    current = f'"{stored["sha256"]}"'
    partial = await client.get(
        url, headers=account.headers | {"Range": "bytes=0-3", "If-Range": current}
    )
    assert (partial.status_code, partial.content) == (206, TEXT[:4])
    stale = await client.get(
        url, headers=account.headers | {"Range": "bytes=500-", "If-Range": '"old"'}
    )
    assert (stale.status_code, stale.content) == (200, TEXT)


async def test_a_non_ascii_name_is_sent_rfc_5987_encoded(client: httpx.AsyncClient) -> None:
    account = await create_account(client)
    body, content_type = multipart([("files", "résumé 2026.txt", "text/plain", b"cv")])
    created = await client.post(
        FILES, content=body, headers=account.headers | {"Content-Type": content_type}
    )
    [stored] = created.json()
    content = await client.get(f"{FILES}/{stored['id']}/content", headers=account.headers)
    assert (
        content.headers["content-disposition"]
        == "attachment; filename*=utf-8''r%C3%A9sum%C3%A9%202026.txt"
    )


async def test_another_users_file_is_404_everywhere(client: httpx.AsyncClient) -> None:
    owner, other = await create_account(client), await create_account(client)
    stored = await upload_one(client, owner, ("a.txt", TEXT, "text/plain"))
    for method, path in (
        ("GET", f"{FILES}/{stored['id']}"),
        ("GET", f"{FILES}/{stored['id']}/content"),
        ("HEAD", f"{FILES}/{stored['id']}/content"),
        ("DELETE", f"{FILES}/{stored['id']}"),
    ):
        response = await client.request(method, path, headers=other.headers)
        assert response.status_code == 404, (method, path)
    listed = await client.get(FILES, headers=other.headers)
    assert listed.json()["items"] == []
    still = await client.get(f"{FILES}/{stored['id']}", headers=owner.headers)
    assert still.status_code == 200


async def test_deletion_removes_the_row_then_the_bytes(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    account = await create_account(client)
    before = stored_paths(settings)
    stored = await upload_one(client, account, ("a.txt", TEXT, "text/plain"))
    assert len(stored_paths(settings) - before) == 1
    deleted = await client.delete(f"{FILES}/{stored['id']}", headers=account.headers)
    assert deleted.status_code == 204
    assert stored_paths(settings) == before
    for path in (f"{FILES}/{stored['id']}", f"{FILES}/{stored['id']}/content"):
        assert (await client.get(path, headers=account.headers)).status_code == 404


async def test_files_are_listed_page_by_page(client: httpx.AsyncClient) -> None:
    account = await create_account(client)
    ids = [
        (await upload_one(client, account, (f"{n}.txt", b"n", "text/plain")))["id"]
        for n in range(5)
    ]
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await client.get(FILES, params=params, headers=account.headers)).json()
        seen += [file["id"] for file in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]


async def test_if_modified_since_is_304_when_the_copy_is_current(
    client: httpx.AsyncClient,
) -> None:
    account = await create_account(client)
    stored = await upload_one(client, account, ("a.txt", TEXT, "text/plain"))
    url = f"{FILES}/{stored['id']}/content"
    first = await client.get(url, headers=account.headers)
    last_modified = first.headers["last-modified"]
    current = await client.get(url, headers=account.headers | {"If-Modified-Since": last_modified})
    assert current.status_code == 304
    older = await client.get(
        url, headers=account.headers | {"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}
    )
    assert older.status_code == 200
    garbage = await client.get(url, headers=account.headers | {"If-Modified-Since": "yesterday"})
    assert garbage.status_code == 200
    # If-None-Match wins over If-Modified-Since.
    both = await client.get(
        url, headers=account.headers | {"If-None-Match": '"x"', "If-Modified-Since": last_modified}
    )
    assert both.status_code == 200


async def test_options_tells_what_an_upload_may_be(client: httpx.AsyncClient) -> None:
    response = await client.options(FILES)
    assert response.status_code == 204
    assert response.headers["allow"] == "GET, POST, OPTIONS"
    assert response.headers["accept-post"] == "multipart/form-data"
    assert response.headers["upload-max-file-bytes"] == str(256 * 1024)
    assert "image/png" in response.headers["upload-content-types"]
