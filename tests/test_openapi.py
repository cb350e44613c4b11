from __future__ import annotations

import httpx
from asgi_lifespan import LifespanManager
from pydantic import SecretStr

from app.auth.scopes import Scope
from app.core.config import AuthSettings, Environment, MailSettings
from app.main import create_app
from tests.conftest import build_test_settings


async def test_docs_and_schema_are_served(client: httpx.AsyncClient) -> None:
    root = await client.get("/")
    assert root.status_code == 307
    assert root.headers["location"] == "/docs"
    assert (await client.get("/docs")).status_code == 200
    assert (await client.get("/redoc")).status_code == 200
    schema = (await client.get("/openapi.json")).json()
    schemes = schema["components"]["securitySchemes"]
    password = schemes["OAuth2PasswordBearer"]["flows"]["password"]
    assert (password["tokenUrl"], password["refreshUrl"]) == (
        "/api/v1/auth/token",
        "/api/v1/auth/refresh",
    )
    assert set(password["scopes"]) == {scope.value for scope in Scope}
    assert schemes["APIKeyHeader"] | {"description": ""} == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "",
    }


async def test_every_route_is_versioned_or_operational(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    for path in schema["paths"]:
        # Probes and the metrics scrape sit at the paths orchestrators expect.
        assert path.startswith(("/api/v1/", "/health/")) or path == "/metrics", path


async def test_errors_are_documented_as_problems(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    create = schema["paths"]["/api/v1/items"]["post"]["responses"]
    for status in ("401", "409", "422"):
        assert list(create[status]["content"]) == ["application/problem+json"], status
    assert {"Problem", "FieldError"} <= set(schema["components"]["schemas"])
    assert "HTTPValidationError" not in schema["components"]["schemas"]


async def test_docs_are_off_in_production() -> None:
    auth = AuthSettings(_env_file=None, jwt_secret=SecretStr("p" * 40))
    mail = MailSettings(_env_file=None, backend="smtp")
    settings = build_test_settings(environment=Environment.production, auth=auth, mail=mail)
    app = create_app(settings)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        # Production only answers the host of PUBLIC_BASE_URL (TrustedHost).
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            for path in ("/docs", "/redoc", "/openapi.json"):
                assert (await http.get(path)).status_code == 404, path
            assert (await http.get("/", follow_redirects=False)).headers[
                "location"
            ] == "/health/live"
