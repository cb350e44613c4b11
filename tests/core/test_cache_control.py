"""Cache-Control is set deliberately on every part of the API."""

from __future__ import annotations

import httpx

from tests.factories import create_account, create_item
from tests.files.conftest import upload_one


async def test_each_part_of_the_api_says_how_it_may_be_cached(client: httpx.AsyncClient) -> None:
    account = await create_account(client)
    item = await create_item(client, account)
    file = await upload_one(client, account, ("a.txt", b"a", "text/plain"))
    export = await client.post("/api/v1/items/exports", headers=account.headers)
    tokens = await client.post(
        "/api/v1/auth/token", data={"username": account.email, "password": account.password}
    )
    expected = {
        # Credentials and account data: never stored.
        ("POST", "/api/v1/auth/token"): ("no-store", tokens),
        ("GET", "/api/v1/users/me"): ("no-store", None),
        ("GET", export.json()["status_url"]): ("no-store", None),
        # Items and files: kept, revalidated with their ETag.
        ("GET", f"/api/v1/items/{item['id']}"): ("private, no-cache", None),
        ("GET", "/api/v1/items"): ("private, no-cache", None),
        ("GET", f"/api/v1/files/{file['id']}/content"): ("private, no-cache", None),
        # Errors describe a moment.
        ("GET", "/api/v1/items/00000000-0000-7000-8000-000000000000"): ("no-store", None),
        ("GET", "/health/ready"): ("no-store", None),
    }
    for (method, url), (policy, answered) in expected.items():
        response = answered or await client.request(method, url, headers=account.headers)
        assert response.headers["cache-control"] == policy, (method, url)
    assert tokens.headers["pragma"] == "no-cache"
