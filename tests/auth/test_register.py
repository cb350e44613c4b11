from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import User
from tests.factories import PASSWORD, login, unique_email

REGISTER = "/api/v1/auth/register"


async def test_register_creates_a_user_without_exposing_the_hash(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    response = await client.post(
        REGISTER, json={"email": "Ada@Example.COM", "password": PASSWORD, "full_name": "Ada"}
    )
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {
        "id",
        "email",
        "full_name",
        "role",
        "is_active",
        "created_at",
        "updated_at",
    }
    assert body["email"] == "ada@example.com"
    assert body["role"] == "user"
    assert body["is_active"] is True
    assert response.headers["cache-control"] == "no-store"
    stored = await db.scalar(select(User).where(User.email == "ada@example.com"))
    assert stored is not None
    assert stored.hashed_password.startswith("$argon2id$")
    assert PASSWORD not in stored.hashed_password


async def test_register_twice_is_409_whatever_the_case(client: httpx.AsyncClient) -> None:
    email = unique_email()
    first = await client.post(REGISTER, json={"email": email, "password": PASSWORD})
    again = await client.post(REGISTER, json={"email": email.upper(), "password": PASSWORD})
    assert first.status_code == 201
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"
    assert again.json()["detail"] == "This email is already registered"


def _full_width(text: str) -> str:
    """`text` with its ASCII letters and digits in their full-width forms (U+FF01...)."""
    return "".join(chr(ord(c) + 0xFEE0) if c.isascii() and c.isalnum() else c for c in text)


async def test_one_address_in_another_unicode_form_is_the_same_account(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    """A full-width spelling normalises (NFKC) to the same address: 409, and it logs in."""
    email = unique_email()
    local, domain = email.split("@")
    variant = f"{_full_width(local[:3])}{local[3:]}@{domain}".upper()
    assert variant.lower() != email
    first = await client.post(REGISTER, json={"email": email, "password": PASSWORD})
    again = await client.post(REGISTER, json={"email": variant, "password": PASSWORD})
    assert (first.status_code, again.status_code) == (201, 409)
    assert await db.scalar(select(User.email).where(User.email == email)) == email
    signed_in = await login(client, variant, PASSWORD)
    assert signed_in.status_code == 200


@pytest.mark.parametrize("email", ["not-an-email", "a@", "@example.com", "a" * 320 + "@x.com"])
async def test_register_with_an_invalid_email_is_422(client: httpx.AsyncClient, email: str) -> None:
    response = await client.post(REGISTER, json={"email": email, "password": PASSWORD})
    assert response.status_code == 422
    assert [error["field"] for error in response.json()["errors"]] == ["body.email"]


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("short1", "string_too_short"),
        ("lettersonly", "value_error"),
        ("1234567890", "value_error"),
        ("a1" * 65, "string_too_long"),
    ],
)
async def test_register_with_a_weak_password_is_422(
    client: httpx.AsyncClient, password: str, reason: str
) -> None:
    response = await client.post(REGISTER, json={"email": unique_email(), "password": password})
    assert response.status_code == 422
    errors = response.json()["errors"]
    assert [(error["field"], error["type"]) for error in errors] == [("body.password", reason)]
    assert password not in response.text


@pytest.mark.parametrize("field", ["role", "is_active", "id", "hashed_password"])
async def test_register_refuses_unknown_fields(client: httpx.AsyncClient, field: str) -> None:
    response = await client.post(
        REGISTER, json={"email": unique_email(), "password": PASSWORD, field: "admin"}
    )
    assert response.status_code == 422
    assert response.json()["errors"][0] == {
        "field": f"body.{field}",
        "message": "Extra inputs are not permitted",
        "type": "extra_forbidden",
    }


async def test_register_without_a_json_content_type_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post(
        REGISTER,
        content=f'{{"email": "{unique_email()}", "password": "{PASSWORD}"}}',
        headers={"content-type": "text/plain"},
    )
    assert response.status_code == 422


async def test_a_nul_character_in_a_name_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post(
        REGISTER, json={"email": unique_email(), "password": PASSWORD, "full_name": "a\u0000"}
    )
    assert response.status_code == 422
