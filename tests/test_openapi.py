from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from openapi_spec_validator import OpenAPIV31SpecValidator
from pydantic import SecretStr

from app.auth.scopes import Scope
from app.core.config import AuthSettings, Environment, FilesSettings, MailSettings, Settings
from app.items import imports
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


async def test_shared_refusals_are_documented_on_every_operation_they_apply_to(
    client: httpx.AsyncClient,
) -> None:
    """Every API operation can be rate limited (429) and find a backing service down
    (503); one that needs a scope can refuse a key without it (403); one that takes an
    Idempotency-Key answers 409 in flight and 422 for a reused key."""
    schema = (await client.get("/openapi.json")).json()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            where = f"{method.upper()} {path}"
            if path.startswith("/api/v1/"):
                assert {"429", "503"} <= set(responses), where
            scopes = [s for r in operation.get("security", []) for s in r.values() if s]
            if scopes:
                assert "403" in responses, where
            parameters = {p["name"].lower() for p in operation.get("parameters", [])}
            if "idempotency-key" in parameters:
                assert {"409", "422"} <= set(responses), where
    create = schema["paths"]["/api/v1/items"]["post"]["responses"]
    assert "Idempotency-Key" in create["422"]["description"]
    assert list(create["422"]["content"]) == ["application/problem+json"]


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


def _refs(node: Any, where: str = "#") -> Iterator[tuple[str, str]]:
    """Every `$ref` in a document, with the JSON pointer of the object that holds it."""
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield where, node["$ref"]
        for key, value in node.items():
            yield from _refs(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _refs(value, f"{where}/{index}")


def _follow(document: dict[str, Any], ref: str) -> Any:
    """The node a local `$ref` points at (RFC 6901), or KeyError."""
    assert ref.startswith("#/"), ref  # the document refers to nothing outside itself
    node: Any = document
    for token in ref[2:].split("/"):
        token = token.replace("~1", "/").replace("~0", "~")
        node = node[int(token)] if isinstance(node, list) else node[token]
    return node


async def test_the_document_is_valid_openapi_3_1(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    assert schema["openapi"].startswith("3.1.")
    errors = [error.message for error in OpenAPIV31SpecValidator(schema).iter_errors()]
    assert errors == []


async def test_every_ref_resolves_within_the_document(client: httpx.AsyncClient) -> None:
    """A `$ref` resolves against the document's root: pydantic's `#/$defs/...` left in
    an operation does not, and tools skip what it describes."""
    schema = (await client.get("/openapi.json")).json()
    refs = list(_refs(schema))
    assert len(refs) > 50  # the walk sees the document
    for where, ref in refs:
        try:
            _follow(schema, ref)
        except (KeyError, IndexError, ValueError):
            raise AssertionError(f"{where}: {ref} does not resolve") from None
    assert not any("$defs" in ref for _, ref in refs)


async def test_the_event_stream_documents_each_event(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    stream = schema["paths"]["/api/v1/events"]["get"]["responses"]["200"]["content"]
    event = stream["text/event-stream"]["schema"]
    assert event["properties"]["data"]["contentSchema"] == {"$ref": "#/components/schemas/Event"}
    assert {"Event", "EventType"} <= set(schema["components"]["schemas"])


async def test_the_upload_encoding_lists_exactly_the_accepted_types(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    schema = (await client.get("/openapi.json")).json()
    form = schema["paths"]["/api/v1/files"]["post"]["requestBody"]["content"]
    listed = form["multipart/form-data"]["encoding"]["files"]["contentType"]
    assert [kind.strip() for kind in listed.split(",")] == settings.files.allowed_types
    # What OPTIONS tells clients is the same list.
    options = await client.options("/api/v1/files")
    assert options.headers["Upload-Content-Types"] == listed


def test_the_upload_encoding_follows_the_settings() -> None:
    """The list is the app's FILES_ALLOWED_TYPES (and the count its
    FILES_MAX_FILES_PER_REQUEST), not a copy made at import."""
    files = FilesSettings(
        _env_file=None,
        allowed_types=["image/png", "application/octet-stream"],
        max_files_per_request=3,
    )
    schema = create_app(build_test_settings(files=files)).openapi()
    form = schema["paths"]["/api/v1/files"]["post"]["requestBody"]["content"]
    encoding = form["multipart/form-data"]["encoding"]
    assert encoding == {"files": {"contentType": "image/png, application/octet-stream"}}
    # An empty upload is a 422, more files than the limit too: the schema says both.
    field = form["multipart/form-data"]["schema"]["properties"]["files"]
    assert (field["minItems"], field["maxItems"]) == (1, 3)


async def test_the_import_documents_its_csv_rules_and_its_422(
    client: httpx.AsyncClient,
) -> None:
    schema = (await client.get("/openapi.json")).json()
    operation = schema["paths"]["/api/v1/items/imports"]["post"]
    responses = operation["responses"]
    for status in ("400", "401", "403", "409", "413", "422", "429"):
        assert list(responses[status]["content"]) == ["application/problem+json"], status
    assert "`title` or `price`" in responses["422"]["description"]
    for column in imports.COLUMNS:
        assert f"`{column}`" in operation["description"], column
    assert f"{imports.MAX_ROWS:,} rows" in operation["description"]
    form = schema["components"]["schemas"]["ImportForm"]
    assert form["properties"]["file"]["description"] == imports.CSV_RULES


async def test_a_csv_without_the_required_columns_gets_the_documented_422(
    client: httpx.AsyncClient,
) -> None:
    account = await create_account(client)
    response = await client.post(
        "/api/v1/items/imports",
        files={"file": ("items.csv", b"name,cost\nLamp,12\n", "text/csv")},
        headers=account.headers,
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert "title, price" in response.json()["detail"]
