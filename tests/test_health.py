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
