"""Browser apps: the refresh token as an HttpOnly cookie (`?cookie=true`)."""

from __future__ import annotations

import httpx

from app.core.config import Settings
from app.core.resources import Resources
from tests.conftest import app_client
from tests.factories import PASSWORD, create_account

TOKEN = "/api/v1/auth/token"
REFRESH = "/api/v1/auth/refresh"
LOGOUT = "/api/v1/auth/logout"


async def _login_with_cookie(client: httpx.AsyncClient, email: str) -> httpx.Response:
    form = {"username": email, "password": PASSWORD}
    return await client.post(TOKEN, params={"cookie": "true"}, data=form)


async def test_the_refresh_token_stays_out_of_the_body(client: httpx.AsyncClient) -> None:
    account = await create_account(client)
    response = await _login_with_cookie(client, account.email)
    assert response.status_code == 200
    assert response.json()["refresh_token"] is None
    cookie = response.headers["set-cookie"]
    for attribute in ("refresh_token=", "HttpOnly", "Path=/api/v1/auth", "SameSite=strict"):
        assert attribute in cookie
    assert "Max-Age=604800" in cookie
    assert "Secure" not in cookie  # PUBLIC_BASE_URL is http here


async def test_refresh_and_logout_through_the_cookie(client: httpx.AsyncClient) -> None:
    account = await create_account(client)
    login = await _login_with_cookie(client, account.email)
    first_cookie = client.cookies["refresh_token"]

    refreshed = await client.post(REFRESH)  # no body: the cookie is the credential
    assert refreshed.status_code == 200
    assert refreshed.json()["refresh_token"] is None
    assert client.cookies["refresh_token"] != first_cookie  # rotated

    client.cookies.clear()
    client.cookies.set("refresh_token", first_cookie, path="/api/v1/auth")
    replay = await client.post(REFRESH)
    assert replay.status_code == 401  # reuse: the whole family is revoked
    client.cookies.clear()

    again = await _login_with_cookie(client, account.email)
    bearer = {"Authorization": f"Bearer {again.json()['access_token']}"}
    out = await client.post(LOGOUT, headers=bearer)
    assert out.status_code == 204
    assert 'refresh_token=""' in out.headers["set-cookie"]
    assert "Max-Age=0" in out.headers["set-cookie"]
    assert login.status_code == 200


async def test_without_a_body_or_a_cookie_refresh_is_401(client: httpx.AsyncClient) -> None:
    response = await client.post(REFRESH)
    assert response.status_code == 401


async def test_the_cookie_is_secure_behind_https(settings: Settings, committed: Resources) -> None:
    secure = settings.model_copy(update={"public_base_url": "https://api.example.com"})
    async with app_client(secure) as http:
        account = await create_account(http)
        response = await _login_with_cookie(http, account.email)
    assert "Secure" in response.headers["set-cookie"]
