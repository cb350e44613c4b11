"""The pure ASGI middleware stack: security headers, CORS, gzip, trusted hosts, the
access log."""

from __future__ import annotations

import gzip
import logging

import httpx
import pytest
from pydantic import SecretStr

from app.core.config import AuthSettings, Environment, MailSettings, Settings
from app.core.middleware import API_CSP
from tests.conftest import app_client
from tests.factories import create_account, create_item

ITEMS = "/api/v1/items"


async def test_every_response_carries_the_security_headers(client: httpx.AsyncClient) -> None:
    account = await create_account(client)
    for response in (
        await client.get(ITEMS, headers=account.headers),
        await client.get("/api/v1/nowhere"),  # a problem
        await client.get("/health/live"),
    ):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["content-security-policy"] == API_CSP
        assert "strict-transport-security" not in response.headers


async def test_the_docs_get_a_policy_that_lets_them_load(client: httpx.AsyncClient) -> None:
    docs = await client.get("/docs")
    policy = docs.headers["content-security-policy"]
    assert "https://cdn.jsdelivr.net" in policy
    assert "connect-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert "cdn.jsdelivr.net" in docs.text  # what the policy lets in is what the page loads


async def test_hsts_when_configured(settings: Settings) -> None:
    async with app_client(settings.model_copy(update={"hsts_seconds": 31536000})) as http:
        response = await http.get("/health/live")
    assert response.headers["strict-transport-security"] == "max-age=31536000; includeSubDomains"


async def test_cors_allows_the_configured_origins_and_exposes_what_clients_read(
    settings: Settings,
) -> None:
    origin = "https://app.example.com"
    async with app_client(settings.model_copy(update={"cors_origins": [origin]})) as http:
        preflight = await http.options(
            ITEMS,
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, idempotency-key",
            },
        )
        simple = await http.get("/health/live", headers={"Origin": origin})
        stranger = await http.get("/health/live", headers={"Origin": "https://evil.example"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == origin
    exposed = {
        h.strip().lower() for h in simple.headers["access-control-expose-headers"].split(",")
    }
    assert {"etag", "location", "x-request-id", "retry-after", "ratelimit-remaining"} <= exposed
    assert "access-control-allow-origin" not in stranger.headers


async def test_big_responses_are_gzipped_small_ones_not(client: httpx.AsyncClient) -> None:
    account = await create_account(client)
    for n in range(20):
        await create_item(client, account, title=f"Item number {n}", description="x" * 100)
    headers = account.headers | {"Accept-Encoding": "gzip"}
    big = await client.get(ITEMS, headers=headers)
    assert big.headers["content-encoding"] == "gzip"
    assert len(gzip.compress(big.content)) < len(big.content)  # httpx already decoded it
    assert "accept-encoding" in big.headers["vary"].lower()
    small = await client.get("/health/live", headers=headers)
    assert "content-encoding" not in small.headers
    identity = await client.get(ITEMS, headers=account.headers | {"Accept-Encoding": "identity"})
    assert "content-encoding" not in identity.headers
    assert identity.json() == big.json()


def _production(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "environment": Environment.production,
            "auth": AuthSettings(_env_file=None, jwt_secret=SecretStr("p" * 40)),
            "mail": MailSettings(_env_file=None, backend="smtp"),
            "allowed_hosts": ["api.example.com"],
        }
    )


async def test_production_answers_its_own_hosts_and_the_probes(settings: Settings) -> None:
    async with app_client(_production(settings), base_url="http://10.1.2.3:8000") as http:
        refused = await http.get(ITEMS)
        probe = await http.get("/health/live")
        scrape = await http.get("/metrics")
        named = await http.get(ITEMS, headers={"Host": "api.example.com"})
        ported = await http.get(ITEMS, headers={"Host": "API.example.com:443"})
        lookalike = await http.get(ITEMS, headers={"Host": "api.example.com.evil.test"})
    assert refused.status_code == 400
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["type"] == "urn:problem:invalid-host"
    assert lookalike.status_code == 400
    assert ported.status_code == 401
    assert probe.status_code == 200  # Kubernetes probes use the pod's address
    assert scrape.status_code == 404  # so do scrapers (the metrics are off here: 404)
    assert named.status_code == 401  # through, to authentication


async def test_the_access_log_has_the_route_status_duration_and_user(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    account = await create_account(client)
    item = await create_item(client, account)
    caplog.set_level(logging.INFO, logger="app.access")
    caplog.clear()
    await client.get(f"{ITEMS}/{item['id']}?secret=hunter2", headers=account.headers)
    await client.get("/api/v1/nowhere")
    found, missing = [record for record in caplog.records if record.name == "app.access"]
    assert found.http == {  # type: ignore[attr-defined]
        "method": "GET",
        "route": "/api/v1/items/{item_id}",
        "status": 200,
        "duration_ms": found.http["duration_ms"],  # type: ignore[attr-defined]
        "user_id": str(account.id),
        "client": "127.0.0.1",
    }
    assert found.http["duration_ms"] > 0  # type: ignore[attr-defined]
    assert "hunter2" not in found.getMessage()
    assert item["id"] not in found.getMessage()  # the template, not the path
    assert (missing.http["route"], missing.http["status"]) == ("<unmatched>", 404)  # type: ignore[attr-defined]
