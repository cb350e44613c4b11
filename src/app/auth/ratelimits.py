"""Who is asking, for rate limiting, and the limits as dependencies.

- `api_budget` (every /api/v1 route but the WebSocket): per user for a valid bearer
  token, per API key for `X-API-Key`, else per client address. It needs no database: a
  bearer token counts for its user only if its signature checks out, and an API key is
  counted under a hash of itself, so a forged or unknown credential only spends its own
  budget, never someone else's.
- `PerAddress(...)`: a limit per client address for one route (registration, password
  recovery), declared in the route decorator.
- Guessed API keys: a key is only known to be bad after a database lookup, and each
  made-up key would open a fresh budget. So an address that sent more bad keys in a
  minute than the anonymous budget allows gets 429 for any key, before any lookup
  (`refuse_key_guessing`, `record_bad_key`; the WebSocket too).
"""

from __future__ import annotations

from fastapi import Depends, Response
from starlette.requests import HTTPConnection

from app.core.config import RateLimitSettings
from app.core.context import add_response_headers
from app.core.dependencies import ResourcesDep
from app.core.http import client_address
from app.core.ratelimit import Limit
from app.core.resources import Resources
from app.core.security import InvalidTokenError, TokenType, sha256_hex

API_KEY_HEADER = "X-API-Key"


def caller_identity(connection: HTTPConnection, resources: ResourcesDep) -> tuple[str, bool]:
    """The identity a request is counted under, and whether it is an authenticated one."""
    api_key = connection.headers.get(API_KEY_HEADER)
    if api_key:
        return f"key:{sha256_hex(api_key)[:32]}", True
    scheme, _, token = connection.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token:
        try:
            claims = resources.tokens.decode(token, TokenType.access)
        except InvalidTokenError:
            pass
        else:
            return f"user:{claims['sub']}", True
    return f"addr:{client_address(connection)}", False


async def api_budget(connection: HTTPConnection, resources: ResourcesDep) -> None:
    """Each caller's budget on the whole API; the `RateLimit-*` headers on every answer
    (errors and 304s included: they are added on the way out)."""
    settings = resources.settings.rate_limit
    if not settings.enabled:
        return
    identity, authenticated = caller_identity(connection, resources)
    per_minute = settings.per_caller_per_minute if authenticated else settings.anonymous_per_minute
    decision = await resources.limiter.hit(Limit("api", per_minute, 60), identity)
    if not decision.admitted:
        raise decision.refuse()
    add_response_headers(connection.scope, decision.headers())


ApiBudget = Depends(api_budget)


def _bad_keys(settings: RateLimitSettings) -> Limit:
    return Limit("bad-api-keys", settings.anonymous_per_minute, 60)


async def refuse_key_guessing(connection: HTTPConnection, resources: Resources) -> None:
    """429 for an address that sent too many bad API keys lately: no lookup for it."""
    settings = resources.settings.rate_limit
    if settings.enabled:
        decision = await resources.limiter.peek(_bad_keys(settings), client_address(connection))
        if not decision.admitted:
            raise decision.refuse()


async def record_bad_key(connection: HTTPConnection, resources: Resources) -> None:
    settings = resources.settings.rate_limit
    if settings.enabled:
        await resources.limiter.hit(_bad_keys(settings), client_address(connection))


class PerAddress:
    """A limit per client address for the routes that declare it."""

    def __init__(self, name: str, *, per_hour: str) -> None:
        self.name = name
        self.per_hour = per_hour  # the RateLimitSettings field that holds the figure

    async def __call__(
        self, connection: HTTPConnection, response: Response, resources: ResourcesDep
    ) -> None:
        settings: RateLimitSettings = resources.settings.rate_limit
        if not settings.enabled:
            return
        limit = Limit(self.name, getattr(settings, self.per_hour), 3600)
        decision = await resources.limiter.hit(limit, client_address(connection))
        if not decision.admitted:
            raise decision.refuse()
