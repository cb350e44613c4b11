"""Every way an access token can be wrong is a 401 (RFC 8725 checks)."""

from __future__ import annotations

import base64
import json
import time
from datetime import datetime, timedelta, tzinfo
from types import SimpleNamespace
from typing import Any
from uuid import uuid4

import httpx
import jwt
import pytest
from pydantic import SecretStr
from sqlalchemy import delete, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import security
from app.core.config import AuthSettings, Settings
from app.core.security import InvalidTokenError, TokenCodec, TokenType
from app.models import User
from tests.factories import Account, create_account

ME = "/api/v1/users/me"


def _codec(settings: Settings, **changes: Any) -> TokenCodec:
    auth = settings.auth.model_copy(update=changes)
    assert isinstance(auth, AuthSettings)
    return TokenCodec(auth)


def _access(settings: Settings, account: Account, **changes: Any) -> str:
    lifetime = changes.pop("lifetime", timedelta(minutes=5))
    return (
        _codec(settings, **changes)
        .encode(
            TokenType.access,
            subject=str(account.id),
            jti=uuid4().hex,
            lifetime=lifetime,
            claims={"ver": 0},
        )
        .token
    )


class _FrozenDatetime:
    """Stands in for PyJWT's `datetime`: its clock reads `at`."""

    def __init__(self, at: float) -> None:
        self._at = at

    def now(self, tz: tzinfo | None = None) -> datetime:
        return datetime.fromtimestamp(self._at, tz=tz)


async def _me(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.get(ME, headers={"Authorization": f"Bearer {token}"})


async def test_a_well_formed_token_is_accepted(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    account = await create_account(client)
    assert (await _me(client, _access(settings, account))).status_code == 200


async def test_missing_token_is_401_with_www_authenticate(client: httpx.AsyncClient) -> None:
    response = await client.get(ME)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["type"] == "urn:problem:unauthorized"


async def test_expired_token_is_401(client: httpx.AsyncClient, settings: Settings) -> None:
    account = await create_account(client)
    token = _access(settings, account, lifetime=timedelta(seconds=-60))
    response = await _me(client, token)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


async def test_a_token_accepted_before_is_refused_once_it_expires(
    client: httpx.AsyncClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The codec remembers verified tokens (app.core.security): never past their expiry."""
    account = await create_account(client)
    token = _access(settings, account, lifetime=timedelta(minutes=1))
    assert (await _me(client, token)).status_code == 200
    assert (await _me(client, token)).status_code == 200  # remembered
    later = time.time() + 120
    monkeypatch.setattr(security, "time", SimpleNamespace(time=lambda: later))
    monkeypatch.setattr(jwt.api_jwt, "datetime", _FrozenDatetime(later), raising=False)
    response = await _me(client, token)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


def test_a_remembered_token_is_not_accepted_as_another_kind(settings: Settings) -> None:
    codec = TokenCodec(settings.auth)
    token = codec.encode(
        TokenType.access, subject="someone", jti="j", lifetime=timedelta(minutes=5)
    ).token
    assert codec.decode(token, TokenType.access)["sub"] == "someone"
    with pytest.raises(InvalidTokenError):
        codec.decode(token, TokenType.refresh)
    claims = codec.decode(token, TokenType.access)
    claims["sub"] = "someone else"  # a caller's change stays its own
    assert codec.decode(token, TokenType.access)["sub"] == "someone"


@pytest.mark.parametrize(
    "changes",
    [
        {"jwt_issuer": "someone-else"},
        {"jwt_audience": "another-api"},
        {"jwt_secret": "another-secret-that-is-also-long-enough-0123456789"},
        {"jwt_algorithm": "HS384"},
    ],
    ids=["issuer", "audience", "key", "algorithm"],
)
async def test_token_with_a_wrong_claim_or_key_is_401(
    client: httpx.AsyncClient, settings: Settings, changes: dict[str, Any]
) -> None:
    account = await create_account(client)
    if "jwt_secret" in changes:
        changes["jwt_secret"] = SecretStr(changes["jwt_secret"])
    assert (await _me(client, _access(settings, account, **changes))).status_code == 401


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def test_unsigned_alg_none_token_is_401(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    account = await create_account(client)
    payload = jwt.decode(_access(settings, account), options={"verify_signature": False})
    unsigned = f"{_b64({'alg': 'none', 'typ': 'at+jwt'})}.{_b64(payload)}."
    assert (await _me(client, unsigned)).status_code == 401


async def test_tampered_payload_is_401(client: httpx.AsyncClient, settings: Settings) -> None:
    """A valid token with only `sub` swapped: every claim passes, only the signature fails."""
    account = await create_account(client)
    other = await create_account(client)
    header, _, signature = _access(settings, account).split(".")
    payload = jwt.decode(_access(settings, account), options={"verify_signature": False})
    forged_payload = _b64(payload | {"sub": str(other.id)})
    assert (await _me(client, f"{header}.{forged_payload}.{signature}")).status_code == 401


async def test_refresh_token_is_not_an_access_token(client: httpx.AsyncClient) -> None:
    account = await create_account(client)
    assert (await _me(client, account.refresh_token)).status_code == 401


async def test_token_of_a_deleted_user_is_401(client: httpx.AsyncClient, db: AsyncSession) -> None:
    account = await create_account(client)
    await db.execute(delete(User).where(User.id == account.id))
    await db.commit()
    assert (await client.get(ME, headers=account.headers)).status_code == 401


async def test_token_of_an_inactive_user_stops_working(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    account = await create_account(client)
    await db.execute(update(User).where(User.id == account.id).values(is_active=False))
    await db.commit()
    assert (await client.get(ME, headers=account.headers)).status_code == 401


async def test_garbage_bearer_is_401(client: httpx.AsyncClient) -> None:
    assert (await _me(client, "not.a.jwt")).status_code == 401
