"""POST /api/v1/items/imports: items from a CSV file (UploadFile in a form model)."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import UploadFile

from app.core.resources import Resources
from app.items import imports
from tests.auth.test_account_cache import statements
from tests.conftest import RunJobs
from tests.factories import Account, create_account, create_item

IMPORTS = "/api/v1/items/imports"
GOOD = b"title,price,tags,status\nRed lamp,12.50,home;sale,active\nBlue chair,40,,\n"


async def send(
    client: httpx.AsyncClient,
    account: Account,
    content: bytes,
    *,
    data: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    return await client.post(
        IMPORTS,
        files={"file": ("items.csv", content, "text/csv")},
        data=data,
        headers=account.headers | (headers or {}),
    )


async def _titles(client: httpx.AsyncClient, account: Account) -> list[str]:
    listed = await client.get("/api/v1/items", headers=account.headers)
    return sorted(item["title"] for item in listed.json()["items"])


async def test_a_csv_becomes_items(client: httpx.AsyncClient) -> None:
    account = await create_account(client)
    response = await send(client, account, GOOD)
    assert response.status_code == 201, response.text
    assert response.json() == {"created": 2, "skipped": []}
    listed = (await client.get("/api/v1/items", headers=account.headers)).json()["items"]
    lamp = next(item for item in listed if item["title"] == "Red lamp")
    assert (lamp["price"], lamp["tags"], lamp["status"]) == ("12.50", ["home", "sale"], "active")


async def test_one_bad_row_rejects_the_whole_file(client: httpx.AsyncClient) -> None:
    account = await create_account(client)
    bad = GOOD + b",5,,\nFree lunch,-1,,\n"
    response = await send(client, account, bad)
    assert response.status_code == 422
    rows = [error["field"] for error in response.json()["errors"]]
    assert rows == ["file.row4", "file.row5"]
    assert await _titles(client, account) == []


async def test_skip_creates_the_valid_rows_and_reports_the_rest(client: httpx.AsyncClient) -> None:
    account = await create_account(client)
    response = await send(client, account, GOOD + b"Free lunch,-1,,\n", data={"on_invalid": "skip"})
    assert response.status_code == 201
    body = response.json()
    assert body["created"] == 2
    assert [problem["row"] for problem in body["skipped"]] == [4]
    assert await _titles(client, account) == ["Blue chair", "Red lamp"]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"name,cost\nLamp,1\n", "lacks the columns: title, price"),
        ("title,price\nCaf\u00e9,1\n".encode("latin-1"), "not UTF-8"),
        (b"title,price\n" + b"x,1\n" * 1001, "At most 1000 rows"),
        # Past the csv module's field size limit (128 KiB): refused, not a 500.
        (b'title,price\n"' + b"x" * 200_000 + b'",1\n', "not a readable CSV file"),
        (b'title,price\nLamp,1\n"unterminated', "not a readable CSV file"),
    ],
)
async def test_unusable_files_are_422(
    client: httpx.AsyncClient, content: bytes, reason: str
) -> None:
    account = await create_account(client)
    response = await send(client, account, content)
    assert response.status_code == 422
    assert reason in response.json()["errors"][0]["message"]


async def test_the_form_refuses_unknown_fields(client: httpx.AsyncClient) -> None:
    account = await create_account(client)
    response = await send(client, account, GOOD, data={"owner_id": "someone"})
    assert response.status_code == 422


async def test_an_export_imports_back(client: httpx.AsyncClient, run_jobs: RunJobs) -> None:
    source, target = await create_account(client), await create_account(client)
    for n in range(3):
        await create_item(client, source, title=f"Item {n}", tags=["x", f"t{n}"], price=f"{n}.25")
    await run_jobs()
    accepted = await client.post("/api/v1/items/exports", headers=source.headers)
    await run_jobs()
    job = (await client.get(accepted.json()["status_url"], headers=source.headers)).json()
    exported = await client.get(job["download_url"], headers=source.headers)
    response = await send(client, target, exported.content)
    assert response.json() == {"created": 3, "skipped": []}
    mine = (await client.get("/api/v1/items", headers=target.headers)).json()["items"]
    assert sorted((i["title"], i["price"], tuple(i["tags"])) for i in mine) == [
        ("Item 0", "0.25", ("t0", "x")),
        ("Item 1", "1.25", ("t1", "x")),
        ("Item 2", "2.25", ("t2", "x")),
    ]


async def test_an_idempotency_key_imports_once(client: httpx.AsyncClient) -> None:
    account = await create_account(client)
    key = {"Idempotency-Key": "import-1"}
    first = await send(client, account, GOOD, headers=key)
    again = await send(client, account, GOOD, headers=key)
    other = await send(client, account, GOOD + b"Extra,1,,\n", headers=key)
    assert first.status_code == again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert other.status_code == 422
    assert await _titles(client, account) == ["Blue chair", "Red lamp"]


async def test_at_most_two_imports_run_at_once(
    committed_client: httpx.AsyncClient, committed: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    running = peak = 0
    original = imports.read_rows

    async def slow(upload: UploadFile) -> imports.ParsedRows:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.2)
        running -= 1
        return await original(upload)

    monkeypatch.setattr(imports, "read_rows", slow)
    accounts = [await create_account(committed_client) for _ in range(4)]
    answers = await asyncio.gather(*(send(committed_client, account, GOOD) for account in accounts))
    assert [answer.status_code for answer in answers] == [201] * 4
    assert peak == 2  # Depends(import_slot, max_concurrency=2)


async def test_an_import_costs_a_few_statements_not_a_few_per_row(
    committed_client: httpx.AsyncClient, committed: Resources
) -> None:
    account = await create_account(committed_client)
    rows = "".join(f"Lamp {n},{n}.50,home;sale,active\n" for n in range(200))
    with statements() as seen:
        response = await send(
            committed_client, account, f"title,price,tags,status\n{rows}".encode()
        )
    assert response.status_code == 201, response.text
    assert response.json()["created"] == 200
    assert len(seen) < 20, seen
    assert len(await _titles(committed_client, account)) == 20  # the first page
