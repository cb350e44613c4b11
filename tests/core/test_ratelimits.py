"""Rate limits in Redis: per caller on the whole API, per address on registration and
password recovery; 429 problems with Retry-After and RateLimit-* headers."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from asgi_lifespan import LifespanManager
from redis.asyncio import Redis

from app.core.config import RateLimitSettings, Settings
from app.core.ids import uuid7
from app.core.resources import Resources
from app.core.security import TokenType
from app.main import create_app
from tests.conftest import app_client
from tests.factories import create_account, create_item

ME = "/api/v1/users/me"
BASE = "http://testserver"


@contextlib.asynccontextmanager
async def limited(settings: Settings, **limits: int) -> AsyncIterator[httpx.AsyncClient]:
    rate_limit = RateLimitSettings(_env_file=None, **limits)  # type: ignore[arg-type]
    async with app_client(settings.model_copy(update={"rate_limit": rate_limit})) as http:
        yield http


async def test_each_caller_has_a_budget_on_the_whole_api(
    settings: Settings, committed: Resources
) -> None:
    async with limited(settings, per_caller_per_minute=3) as http:
        first, second = await create_account(http), await create_account(http)
        answers = [await http.get(ME, headers=first.headers) for _ in range(4)]
        other = await http.get(ME, headers=second.headers)
    assert [answer.status_code for answer in answers] == [200, 200, 200, 429]
    assert [answer.headers["ratelimit-remaining"] for answer in answers[:3]] == ["2", "1", "0"]
    assert answers[0].headers["ratelimit-limit"] == "3"
    assert answers[0].headers["ratelimit-policy"] == "3;w=60"
    refused = answers[3]
    assert refused.headers["content-type"] == "application/problem+json"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["ratelimit-remaining"] == "0"
    assert other.status_code == 200  # someone else's budget is untouched


async def test_the_ratelimit_headers_ride_on_errors_304s_and_direct_responses(
    settings: Settings, committed: Resources
) -> None:
    async with limited(settings, per_caller_per_minute=10) as http:
        account = await create_account(http)
        item = await create_item(http, account)
        path = f"/api/v1/items/{item['id']}"
        answers = [
            await http.get(path, headers=account.headers),  # a Response the route built
            await http.get(
                path, headers=account.headers | {"If-None-Match": f'"{item["version"]}"'}
            ),
            await http.get(f"/api/v1/items/{uuid7()}", headers=account.headers),  # 404
            await http.patch(path, json={"bogus": 1}, headers=account.headers),  # 422
        ]
    assert [answer.status_code for answer in answers] == [200, 304, 404, 422]
    remaining = [answer.headers.get("ratelimit-remaining") for answer in answers]
    assert remaining == ["8", "7", "6", "5"]  # creating the item spent one
    assert all(answer.headers["ratelimit-policy"] == "10;w=60" for answer in answers)


async def test_a_forged_token_cannot_spend_someone_elses_budget(
    settings: Settings, committed: Resources
) -> None:
    async with limited(settings, per_caller_per_minute=2, anonymous_per_minute=100) as http:
        victim = await create_account(http)
        header, payload, _ = victim.access_token.split(".")
        forged = {"Authorization": f"Bearer {header}.{payload}.AAAA"}
        for _ in range(5):
            assert (await http.get(ME, headers=forged)).status_code == 401
        assert (await http.get(ME, headers=victim.headers)).status_code == 200


async def test_an_address_guessing_keys_is_refused_before_any_lookup(
    settings: Settings, committed: Resources
) -> None:
    """Made-up keys spend their address's anonymous budget; once an address sent that
    many bad keys, even a real key from it gets 429, before any database lookup."""
    rate_limit = RateLimitSettings(
        _env_file=None, per_caller_per_minute=100, anonymous_per_minute=3
    )
    app = create_app(settings.model_copy(update={"rate_limit": rate_limit}))
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url=BASE) as own,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app, client=("203.0.113.9", 4000)),
            base_url=BASE,
        ) as guesser,
    ):
        account = await create_account(own)
        created = await own.post(
            "/api/v1/users/me/api-keys",
            json={"name": "sync", "scopes": ["account:read"]},
            headers=account.headers,
        )
        good = {"X-API-Key": created.json()["key"]}
        made_up = [
            (await guesser.get(ME, headers={"X-API-Key": f"ak_{uuid7().hex[:12]}_x"}))
            for _ in range(4)
        ]
        refused = await guesser.get(ME, headers=good)
        elsewhere = await own.get(ME, headers=good)
    assert [response.status_code for response in made_up] == [401, 401, 401, 429]
    assert refused.status_code == 429  # this address gets no lookup any more
    assert "retry-after" in refused.headers
    assert elsewhere.status_code == 200


async def test_rotating_unverified_api_keys_spends_the_address_budget(
    settings: Settings, redis: Redis
) -> None:
    """A route that never looks at the key (refresh) cannot be flooded by sending a new
    made-up key each time: an unverified key is anonymous."""
    async with limited(settings, per_caller_per_minute=100, anonymous_per_minute=5) as http:
        codes = [
            (
                await http.post(
                    "/api/v1/auth/refresh",
                    json={"refresh_token": "x"},
                    headers={"X-API-Key": f"ak_{uuid7().hex[:12]}_{n}"},
                )
            ).status_code
            for n in range(8)
        ]
    assert codes == [401] * 5 + [429] * 3


async def test_a_verified_key_has_its_own_budget(settings: Settings, committed: Resources) -> None:
    async with limited(settings, per_caller_per_minute=100, anonymous_per_minute=4) as http:
        account = await create_account(http)  # spends two anonymous requests
        created = await http.post(
            "/api/v1/users/me/api-keys",
            json={"name": "sync", "scopes": ["account:read"]},
            headers=account.headers,
        )
        key = {"X-API-Key": created.json()["key"]}
        # The first use is anonymous (the key is not known yet); then it counts as itself.
        codes = [(await http.get(ME, headers=key)).status_code for _ in range(10)]
        anonymous = await http.get("/api/v1/items")
    assert codes == [200] * 10
    assert anonymous.status_code == 401  # the address still has one of its four left


async def test_anonymous_requests_are_counted_per_address(settings: Settings, redis: Redis) -> None:
    async with limited(settings, anonymous_per_minute=2) as http:
        codes = [(await http.get("/api/v1/items")).status_code for _ in range(3)]
    assert codes == [401, 401, 429]


@pytest.mark.parametrize(
    ("path", "limit", "body"),
    [
        ("/api/v1/auth/register", "registrations_per_hour", None),
        ("/api/v1/auth/password-recovery", "recoveries_per_hour", {"email": "a@example.com"}),
    ],
)
async def test_registration_and_recovery_are_limited_per_address(
    settings: Settings, committed: Resources, path: str, limit: str, body: dict[str, str] | None
) -> None:
    async with limited(settings, **{limit: 2}) as http:
        codes = []
        for number in range(3):
            payload = body or {"email": f"limit-{number}@example.com", "password": "password-1"}
            codes.append((await http.post(path, json=payload)).status_code)
    assert codes[:2] in ([201, 201], [202, 202])
    assert codes[2] == 429


async def test_limits_are_shared_by_every_process(settings: Settings, committed: Resources) -> None:
    """Two app instances (two API processes) against one Redis: 4 per minute in all."""
    async with (
        limited(settings, per_caller_per_minute=4) as one,
        limited(settings, per_caller_per_minute=4) as two,
    ):
        account = await create_account(one)
        codes = [
            (await http.get(ME, headers=account.headers)).status_code for http in [one, two] * 4
        ]
    assert sorted(codes) == [200] * 4 + [429] * 4


async def test_an_expired_token_counts_as_anonymous(
    settings: Settings, resources: Resources, redis: Redis
) -> None:
    expired = resources.tokens.encode(
        TokenType.access,
        subject=str(uuid7()),
        jti=uuid7().hex,
        lifetime=timedelta(minutes=-5),
    ).token
    async with limited(settings, anonymous_per_minute=1, per_caller_per_minute=100) as http:
        codes = [
            (await http.get(ME, headers={"Authorization": f"Bearer {expired}"})).status_code
            for _ in range(2)
        ]
    assert codes == [401, 429]
