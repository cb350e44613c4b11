from __future__ import annotations

from datetime import timedelta

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import Settings
from app.core.security import TokenCodec, TokenType
from app.models import RefreshToken
from tests.conftest import app_client
from tests.factories import create_account

REFRESH = "/api/v1/auth/refresh"
LOGOUT = "/api/v1/auth/logout"
ME = "/api/v1/users/me"


async def test_refresh_rotates_the_pair(client: httpx.AsyncClient) -> None:
    account = await create_account(client)
    response = await client.post(REFRESH, json={"refresh_token": account.refresh_token})
    assert response.status_code == 200
    pair = response.json()
    assert pair["refresh_token"] != account.refresh_token
    me = await client.get(ME, headers={"Authorization": f"Bearer {pair['access_token']}"})
    assert me.status_code == 200


async def test_reusing_a_refresh_token_revokes_its_whole_family(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    account = await create_account(client)
    rotated = (await client.post(REFRESH, json={"refresh_token": account.refresh_token})).json()

    replay = await client.post(REFRESH, json={"refresh_token": account.refresh_token})
    assert replay.status_code == 401
    assert replay.json()["type"] == "urn:problem:refresh-token-reused"

    # The legitimate successor dies with the family, and the revocation was committed.
    successor = await client.post(REFRESH, json={"refresh_token": rotated["refresh_token"]})
    assert successor.status_code == 401
    tokens = (
        await db.scalars(select(RefreshToken).where(RefreshToken.user_id == account.id))
    ).all()
    assert len(tokens) == 2
    assert all(token.revoked_at is not None for token in tokens)


async def test_other_sessions_survive_a_reuse_in_one_family(client: httpx.AsyncClient) -> None:
    account = await create_account(client)
    second_login = (
        await client.post(
            "/api/v1/auth/token", data={"username": account.email, "password": account.password}
        )
    ).json()
    await client.post(REFRESH, json={"refresh_token": account.refresh_token})
    await client.post(REFRESH, json={"refresh_token": account.refresh_token})
    other = await client.post(REFRESH, json={"refresh_token": second_login["refresh_token"]})
    assert other.status_code == 200


async def test_expired_refresh_token_is_401(client: httpx.AsyncClient, settings: Settings) -> None:
    account = await create_account(client)
    expired = TokenCodec(settings.auth).encode(
        TokenType.refresh,
        subject=str(account.id),
        jti="01a20000-0000-7000-8000-000000000000",
        lifetime=timedelta(seconds=-60),
    )
    response = await client.post(REFRESH, json={"refresh_token": expired.token})
    assert response.status_code == 401


async def test_access_token_is_not_a_refresh_token(client: httpx.AsyncClient) -> None:
    account = await create_account(client)
    response = await client.post(REFRESH, json={"refresh_token": account.access_token})
    assert response.status_code == 401


async def test_unknown_refresh_token_id_is_401(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    account = await create_account(client)
    forged = TokenCodec(settings.auth).encode(
        TokenType.refresh,
        subject=str(account.id),
        jti="01a20000-0000-7000-8000-000000000001",
        lifetime=timedelta(days=1),
    )
    assert (await client.post(REFRESH, json={"refresh_token": forged.token})).status_code == 401


async def test_logout_kills_the_access_and_the_refresh_token(client: httpx.AsyncClient) -> None:
    account = await create_account(client)
    response = await client.post(
        LOGOUT, json={"refresh_token": account.refresh_token}, headers=account.headers
    )
    assert response.status_code == 204
    assert (await client.get(ME, headers=account.headers)).status_code == 401
    refreshed = await client.post(REFRESH, json={"refresh_token": account.refresh_token})
    assert refreshed.status_code == 401


async def test_logout_leaves_other_sessions_alone(client: httpx.AsyncClient) -> None:
    account = await create_account(client)
    second = (
        await client.post(
            "/api/v1/auth/token", data={"username": account.email, "password": account.password}
        )
    ).json()
    await client.post(
        LOGOUT, json={"refresh_token": account.refresh_token}, headers=account.headers
    )
    other_headers = {"Authorization": f"Bearer {second['access_token']}"}
    assert (await client.get(ME, headers=other_headers)).status_code == 200


async def test_logout_with_another_users_refresh_token_is_401_and_revokes_nothing(
    client: httpx.AsyncClient,
) -> None:
    alice = await create_account(client)
    bob = await create_account(client)
    response = await client.post(
        LOGOUT, json={"refresh_token": bob.refresh_token}, headers=alice.headers
    )
    assert response.status_code == 401
    assert (
        await client.post(REFRESH, json={"refresh_token": bob.refresh_token})
    ).status_code == 200
    assert (await client.get(ME, headers=alice.headers)).status_code == 200


async def test_logout_needs_a_bearer(client: httpx.AsyncClient) -> None:
    account = await create_account(client)
    response = await client.post(LOGOUT, json={"refresh_token": account.refresh_token})
    assert response.status_code == 401


def _bearer(pair: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {pair['access_token']}"}


async def test_a_reused_refresh_token_ends_every_access_token_of_its_sign_in_in_every_process(
    committed_client: httpx.AsyncClient, settings: Settings
) -> None:
    """The thief's and the owner's access tokens of that sign-in stop working at once,
    in this process and in another one; another sign-in of the account goes on."""
    account = await create_account(committed_client)
    first = {"access_token": account.access_token, "refresh_token": account.refresh_token}
    second = (
        await committed_client.post(REFRESH, json={"refresh_token": first["refresh_token"]})
    ).json()
    third = (
        await committed_client.post(REFRESH, json={"refresh_token": second["refresh_token"]})
    ).json()
    other_sign_in = (
        await committed_client.post(
            "/api/v1/auth/token", data={"username": account.email, "password": account.password}
        )
    ).json()
    async with app_client(settings) as other_process:
        for pair in (first, second, third):
            assert (await other_process.get(ME, headers=_bearer(pair))).status_code == 200

        replay = await committed_client.post(
            REFRESH, json={"refresh_token": first["refresh_token"]}
        )
        assert replay.status_code == 401

        for client in (committed_client, other_process):
            for pair in (first, second, third):
                refused = await client.get(ME, headers=_bearer(pair))
                assert refused.status_code == 401, pair
                assert refused.json()["detail"] == "This access token has been revoked"
            assert (await client.get(ME, headers=_bearer(other_sign_in))).status_code == 200


async def test_logout_ends_the_access_tokens_of_earlier_refreshes_too(
    client: httpx.AsyncClient,
) -> None:
    account = await create_account(client)
    earlier = {"access_token": account.access_token}
    latest = (await client.post(REFRESH, json={"refresh_token": account.refresh_token})).json()
    response = await client.post(
        LOGOUT, json={"refresh_token": latest["refresh_token"]}, headers=_bearer(latest)
    )
    assert response.status_code == 204
    assert (await client.get(ME, headers=_bearer(earlier))).status_code == 401
    assert (await client.get(ME, headers=_bearer(latest))).status_code == 401
