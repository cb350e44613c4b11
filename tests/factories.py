"""Small async factories that go through the API, as a client would."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import httpx
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Role, User

PASSWORD = "correct-horse-1"
_numbers = itertools.count(1)


@dataclass
class Account:
    id: UUID
    email: str
    password: str
    access_token: str
    refresh_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


def unique_email(prefix: str = "user") -> str:
    return f"{prefix}-{next(_numbers)}@example.com"


async def login(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await client.post("/api/v1/auth/token", data={"username": email, "password": password})


async def create_account(
    client: httpx.AsyncClient,
    *,
    email: str | None = None,
    password: str = PASSWORD,
    full_name: str | None = None,
) -> Account:
    email = email or unique_email()
    registered = await client.post(
        "/api/v1/auth/register",
        json={"email": email, "password": password, "full_name": full_name},
    )
    assert registered.status_code == 201, registered.text
    tokens = await login(client, email, password)
    assert tokens.status_code == 200, tokens.text
    body = tokens.json()
    return Account(
        id=UUID(registered.json()["id"]),
        email=email,
        password=password,
        access_token=body["access_token"],
        refresh_token=body["refresh_token"],
    )


async def create_admin(client: httpx.AsyncClient, db: AsyncSession) -> Account:
    account = await create_account(client, email=unique_email("admin"))
    await db.execute(update(User).where(User.id == account.id).values(role=Role.admin))
    await db.commit()
    return account


async def create_item(client: httpx.AsyncClient, account: Account, **fields: Any) -> dict[str, Any]:
    body = {"title": "Red lamp", "price": "12.50"} | fields
    response = await client.post("/api/v1/items", json=body, headers=account.headers)
    assert response.status_code == 201, response.text
    item: dict[str, Any] = response.json()
    return item
