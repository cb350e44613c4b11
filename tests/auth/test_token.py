from __future__ import annotations

import asyncio

import argon2
import httpx
import jwt
import pytest
from redis.asyncio import Redis
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.throttle import LoginThrottle
from app.core.config import AuthSettings, Settings
from app.core.errors import TooManyRequests
from app.models import User
from tests.factories import PASSWORD, create_account, login, unique_email


async def test_login_returns_a_bearer_pair(client: httpx.AsyncClient) -> None:
    account = await create_account(client)
    response = await login(client, account.email.upper(), PASSWORD)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"access_token", "refresh_token", "token_type", "expires_in"}
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 15 * 60
    assert response.headers["cache-control"] == "no-store"
    me = await client.get(
        "/api/v1/users/me", headers={"Authorization": f"Bearer {body['access_token']}"}
    )
    assert me.status_code == 200
    assert me.json()["email"] == account.email


async def test_wrong_password_and_unknown_email_get_the_same_401(
    client: httpx.AsyncClient,
) -> None:
    account = await create_account(client)
    wrong_password = await login(client, account.email, "wrong-password-1")
    unknown_email = await login(client, unique_email("nobody"), PASSWORD)
    for response in (wrong_password, unknown_email):
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.headers["content-type"] == "application/problem+json"
    assert wrong_password.json()["detail"] == unknown_email.json()["detail"]


async def test_unknown_email_costs_one_argon2_verification_like_a_wrong_password(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = await create_account(client)
    calls: list[str] = []
    original = argon2.PasswordHasher.verify

    def counting_verify(self: argon2.PasswordHasher, hash: str, password: str) -> bool:
        calls.append(password)
        return original(self, hash, password)

    monkeypatch.setattr(argon2.PasswordHasher, "verify", counting_verify)
    await login(client, account.email, "wrong-password-1")
    await login(client, unique_email("nobody"), "wrong-password-2")
    assert calls == ["wrong-password-1", "wrong-password-2"]


async def test_repeated_failures_are_throttled_with_retry_after(
    client: httpx.AsyncClient,
) -> None:
    account = await create_account(client)
    statuses = [
        (await login(client, account.email, "wrong-password-1")).status_code for _ in range(6)
    ]
    assert statuses == [401] * 5 + [429]
    throttled = await login(client, account.email, PASSWORD)
    assert throttled.status_code == 429
    assert 0 < int(throttled.headers["retry-after"]) <= 900
    assert throttled.json()["status"] == 429


async def test_success_resets_the_failure_count(client: httpx.AsyncClient) -> None:
    account = await create_account(client)
    for _ in range(4):
        await login(client, account.email, "wrong-password-1")
    assert (await login(client, account.email, PASSWORD)).status_code == 200
    statuses = [
        (await login(client, account.email, "wrong-password-1")).status_code for _ in range(5)
    ]
    assert statuses == [401] * 5


async def test_inactive_user_cannot_log_in(client: httpx.AsyncClient, db: AsyncSession) -> None:
    account = await create_account(client)
    await db.execute(update(User).where(User.id == account.id).values(is_active=False))
    await db.commit()
    response = await login(client, account.email, PASSWORD)
    assert response.status_code == 403
    assert response.json()["detail"] == "This account is disabled"


async def test_login_rehashes_a_password_stored_with_old_parameters(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    account = await create_account(client)
    old_hash = argon2.PasswordHasher(time_cost=1, memory_cost=512, parallelism=1).hash(PASSWORD)
    await db.execute(update(User).where(User.id == account.id).values(hashed_password=old_hash))
    await db.commit()

    assert (await login(client, account.email, PASSWORD)).status_code == 200

    db.expire_all()
    stored = await db.scalar(select(User.hashed_password).where(User.id == account.id))
    assert stored is not None
    assert stored != old_hash
    assert "m=1024,t=1,p=1" in stored


async def test_login_form_without_password_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/auth/token", data={"username": "a@example.com"})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "body.password"


async def test_access_token_carries_the_documented_claims(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    account = await create_account(client)
    header = jwt.get_unverified_header(account.access_token)
    claims = jwt.decode(
        account.access_token,
        settings.auth.jwt_secret.get_secret_value(),
        algorithms=["HS256"],
        audience="app-api",
        issuer="app",
    )
    assert header == {"alg": "HS256", "typ": "at+jwt"}
    assert claims["sub"] == str(account.id)
    assert claims["type"] == "access"
    assert {"exp", "iat", "nbf", "jti", "ver"} <= set(claims)
    assert claims["exp"] - claims["iat"] == 15 * 60


async def test_one_address_spraying_many_accounts_is_throttled(redis: Redis) -> None:
    throttle = LoginThrottle(redis, AuthSettings(_env_file=None, login_max_failures_per_address=3))
    for n in range(3):
        await throttle.reserve(f"victim-{n}@example.com", "203.0.113.9")
    with pytest.raises(TooManyRequests):
        await throttle.reserve("victim-99@example.com", "203.0.113.9")
    await throttle.reserve("victim-99@example.com", "198.51.100.1")  # another address is fine


async def test_parallel_guesses_cannot_slip_past_the_limit(
    committed_client: httpx.AsyncClient,
) -> None:
    account = await create_account(committed_client)
    responses = await asyncio.gather(
        *(login(committed_client, account.email, f"wrong-password-{n}") for n in range(30))
    )
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [401] * 5 + [429] * 25


async def test_a_nul_character_in_the_username_is_422(client: httpx.AsyncClient) -> None:
    response = await login(client, "a\x00@example.com", PASSWORD)
    assert response.status_code == 422
