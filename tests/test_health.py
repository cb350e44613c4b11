from __future__ import annotations

import httpx
from asgi_lifespan import LifespanManager

from app.core.config import RedisSettings
from app.main import create_app
from tests.conftest import build_test_settings


async def test_live_answers_200(client: httpx.AsyncClient) -> None:
    response = await client.get("/health/live")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_the_edge_answers_liveness_exactly_as_the_route_does(
    client: httpx.AsyncClient,
) -> None:
    at_the_edge = await client.get("/health/live")
    # A request with an Origin goes through the middleware and the router.
    routed = await client.get("/health/live", headers={"Origin": "https://app.example.com"})
    assert at_the_edge.status_code == routed.status_code == 200
    assert at_the_edge.content == routed.content == b'{"status":"ok"}'
    edge_headers = {k: v for k, v in at_the_edge.headers.items() if k != "x-request-id"}
    routed_headers = {k: v for k, v in routed.headers.items() if k != "x-request-id"}
    assert edge_headers == routed_headers
    assert len(at_the_edge.headers["x-request-id"]) == 32
    # Other methods still reach the router.
    assert (await client.post("/health/live")).status_code == 405


async def test_ready_names_each_check(client: httpx.AsyncClient) -> None:
    response = await client.get("/health/ready")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "redis"}
    assert all(check["status"] == "ok" for check in body["checks"].values())


async def test_ready_is_503_when_redis_is_unreachable_and_live_stays_200() -> None:
    # Port 1 on loopback: nothing listens there, the connection is refused at once.
    settings = build_test_settings(redis=RedisSettings(_env_file=None, url="redis://127.0.0.1:1/0"))
    app = create_app(settings)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            ready = await http.get("/health/ready")
            live = await http.get("/health/live")
    assert ready.status_code == 503
    checks = ready.json()["checks"]
    assert checks["redis"]["status"] == "error"
    assert checks["database"]["status"] == "ok"
    assert live.status_code == 200


async def test_ready_shows_latency_or_error_not_nulls(client: httpx.AsyncClient) -> None:
    checks = (await client.get("/health/ready")).json()["checks"]
    assert set(checks["database"]) == {"status", "latency_ms"}
