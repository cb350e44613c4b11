"""The refresh token as an HttpOnly cookie, for browser apps that ask for it.

A script in the page can then never read the long-lived refresh token (an XSS can only
use the short-lived access token it holds in memory). The cookie is `HttpOnly`,
`SameSite=Strict` (never sent on a request another site starts), scoped to the auth
routes, and `Secure` whenever PUBLIC_BASE_URL is https.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Cookie, Query, Response

from app.auth.schemas import TokenPair
from app.core.config import Settings
from app.core.http import API_PREFIX

NAME = "refresh_token"
PATH = f"{API_PREFIX}/auth"

RefreshCookie = Annotated[
    str | None,
    Cookie(
        alias=NAME,
        max_length=4096,
        description="The refresh token set by `?cookie=true` (browser apps).",
    ),
]
CookieMode = Annotated[
    bool,
    Query(
        alias="cookie",
        description="Browser apps: set the refresh token as an HttpOnly cookie instead of "
        "returning it in the body (`refresh_token` is then null).",
    ),
]


def _secure(settings: Settings) -> bool:
    return settings.public_base_url.startswith("https://")


def deliver(
    pair: TokenPair, response: Response, *, as_cookie: bool, settings: Settings
) -> TokenPair:
    """The pair as the client asked for it: all in the body, or the refresh token in
    the cookie only."""
    if not as_cookie:
        return pair
    assert pair.refresh_token is not None
    response.set_cookie(
        NAME,
        pair.refresh_token,
        max_age=settings.auth.refresh_token_expire_days * 86400,
        path=PATH,
        secure=_secure(settings),
        httponly=True,
        samesite="strict",
    )
    return pair.model_copy(update={"refresh_token": None})


def clear(response: Response, settings: Settings) -> None:
    response.delete_cookie(
        NAME, path=PATH, secure=_secure(settings), httponly=True, samesite="strict"
    )
