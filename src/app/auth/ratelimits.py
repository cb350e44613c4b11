"""Who is asking, for rate limiting, and the limits as dependencies.

- `api_budget` (every /api/v1 route but the WebSocket): per user for a valid bearer
  token, per API key for a verified `X-API-Key`, else per client address. It needs no
  database: a bearer token counts for its user only if its signature checks out, and an
  API key counts under a hash of itself only after a database lookup found it valid
  (a marker in Redis); an unverified key spends its address's anonymous budget.
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
from app.core.retry import is_retry
from app.core.security import InvalidTokenError, TokenType, sha256_hex

API_KEY_HEADER = "X-API-Key"


# Set once a presented key was verified against the database: only then does the key
# count as an identity of its own. Kept for a few minutes (a revoked key keeps one
# budget of its own until then; it authenticates nothing).
KNOWN_KEY_TTL_SECONDS = 300
KNOWN_KEY_SCOPE = "app.api_key_known"


def _key_digest(api_key: str) -> str:
    return sha256_hex(api_key)[:32]


def known_key_marker(api_key: str) -> str:
    return f"api-key:verified:{_key_digest(api_key)}"


def caller_identity(connection: HTTPConnection, resources: Resources) -> tuple[str, bool]:
    """The identity a bearer-token request is counted under, and whether it is an
    authenticated one (the token's signature checks out)."""
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
    (errors and 304s included: they are added on the way out). An API key is counted as
    itself only once verified (`remember_key`); until then, and on routes that never
    look at it, the request spends its address's anonymous budget, so made-up keys buy
    nothing."""
    settings = resources.settings.rate_limit
    if not settings.enabled or is_retry(connection.scope):  # counted on the first run
        return
    api_key = connection.headers.get(API_KEY_HEADER)
    if api_key:
        decision, known = await resources.limiter.hit_if_known(
            known_key_marker(api_key),
            known=(Limit("api", settings.per_caller_per_minute, 60), f"key:{_key_digest(api_key)}"),
            otherwise=(
                Limit("api", settings.anonymous_per_minute, 60),
                f"addr:{client_address(connection)}",
            ),
        )
        connection.scope[KNOWN_KEY_SCOPE] = known
    else:
        identity, authenticated = caller_identity(connection, resources)
        per_minute = (
            settings.per_caller_per_minute if authenticated else settings.anonymous_per_minute
        )
        decision = await resources.limiter.hit(Limit("api", per_minute, 60), identity)
    if not decision.admitted:
        raise decision.refuse()
    add_response_headers(connection.scope, decision.headers())


async def remember_key(connection: HTTPConnection, resources: Resources, api_key: str) -> None:
    """After a key checked out against the database: count it as itself from now on."""
    if resources.settings.rate_limit.enabled and not connection.scope.get(KNOWN_KEY_SCOPE):
        await resources.redis.set(known_key_marker(api_key), "1", ex=KNOWN_KEY_TTL_SECONDS)


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
        if not settings.enabled or is_retry(connection.scope):
            return
        limit = Limit(self.name, getattr(settings, self.per_hour), 3600)
        decision = await resources.limiter.hit(limit, client_address(connection))
        if not decision.admitted:
            raise decision.refuse()
