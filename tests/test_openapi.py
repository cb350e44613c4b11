from __future__ import annotations

import re
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from pydantic import SecretStr

from app.auth.scopes import Scope
from app.core.config import AuthSettings, Environment, MailSettings
from app.main import create_app
from tests.conftest import build_test_settings
from tests.factories import create_account


async def test_docs_and_schema_are_served(client: httpx.AsyncClient) -> None:
    root = await client.get("/")
    assert root.status_code == 307
    assert root.headers["location"] == "/docs"
    docs = await client.get("/docs")
    assert docs.status_code == 200
    # Swagger UI keeps the token across reloads, so trying the API needs one login.
    assert '"persistAuthorization": true' in docs.text
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


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """The schema a body refers to (through `anyOf` for an optional body)."""
    for option in node.get("anyOf", []):
        if "$ref" in option:
            return _resolve(schema, option)
    ref = node.get("$ref")
    return schema["components"]["schemas"][ref.rsplit("/", 1)[1]] if ref else node


async def test_every_request_body_has_examples(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            for media, content in operation.get("requestBody", {}).get("content", {}).items():
                body = _resolve(schema, content["schema"])
                assert "examples" in body or "examples" in content, (method, path, media)


async def test_every_error_answer_is_documented_as_a_problem(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                # The readiness probe's 503 is its own body, naming each check.
                if status.startswith(("4", "5")) and (path, status) != ("/health/ready", "503"):
                    assert list(response.get("content", {})) == ["application/problem+json"], (
                        method,
                        path,
                        status,
                    )
            assert "422" in operation["responses"], (method, path)
            assert "500" in operation["responses"], (method, path)


async def test_operations_have_clean_ids_tags_and_declared_security(
    client: httpx.AsyncClient,
) -> None:
    schema = (await client.get("/openapi.json")).json()
    tags = {tag["name"] for tag in schema["tags"]}
    assert all(tag.get("description") for tag in schema["tags"])
    ids = []
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            ids.append(operation["operationId"])
            assert re.fullmatch(r"[a-z-]+-[a-z_]+", operation["operationId"]), operation
            assert set(operation["tags"]) <= tags, (method, path)
    assert len(ids) == len(set(ids))
    items = schema["paths"]["/api/v1/items"]
    assert {"OAuth2PasswordBearer": ["items:read"]} in items["get"]["security"]
    assert {"APIKeyHeader": ["items:read"]} in items["get"]["security"]
    assert {"OAuth2PasswordBearer": ["items:write"]} in items["post"]["security"]
    assert schema["servers"] == [
        {
            "url": "http://127.0.0.1:8000",
            "description": "The API as its clients reach it (PUBLIC_BASE_URL)",
        }
    ]


async def test_the_authorize_dialogs_password_flow_works(client: httpx.AsyncClient) -> None:
    """What Swagger UI's Authorize dialog does: the form it posts to the scheme's
    tokenUrl, then the bearer token on a call."""
    account = await create_account(client)
    schema = (await client.get("/openapi.json")).json()
    flow = schema["components"]["securitySchemes"]["OAuth2PasswordBearer"]["flows"]["password"]
    form = {
        "grant_type": "password",
        "username": account.email,
        "password": account.password,
        "scope": "items:read items:write",
        "client_id": "swagger-ui",
    }
    token = await client.post(flow["tokenUrl"], data=form)
    assert token.status_code == 200
    assert token.json()["token_type"] == "bearer"
    bearer = {"Authorization": f"Bearer {token.json()['access_token']}"}
    assert (await client.get("/api/v1/users/me", headers=bearer)).status_code == 200
    refreshed = await client.post(
        flow["refreshUrl"], json={"refresh_token": token.json()["refresh_token"]}
    )
    assert refreshed.status_code == 200
    unknown_field = await client.post(flow["tokenUrl"], data=form | {"admin": "yes"})
    assert unknown_field.status_code == 422
