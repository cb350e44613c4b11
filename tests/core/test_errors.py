"""Every error the service answers is an RFC 9457 problem with the request id."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from asgi_lifespan import LifespanManager

from app.auth.dependencies import get_current_user
from app.main import create_app
from app.models import User
from tests.conftest import ServedApp, build_test_settings
from tests.factories import create_account

PROBLEM_KEYS = {"type", "title", "status", "detail", "instance", "request_id"}


def _assert_problem(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, object] = response.json()
    assert set(body) >= PROBLEM_KEYS
    assert body["status"] == status
    assert body["request_id"] == response.headers["x-request-id"]
    return body


async def test_unknown_route_is_a_404_problem(client: httpx.AsyncClient) -> None:
    body = _assert_problem(await client.get("/api/v1/nothing-here"), 404)
    assert body["instance"] == "/api/v1/nothing-here"
    assert body["type"] == "about:blank"


async def test_wrong_method_is_a_405_problem_with_allow(client: httpx.AsyncClient) -> None:
    response = await client.delete("/api/v1/auth/token")
    _assert_problem(response, 405)
    assert response.headers["allow"] == "POST"


async def test_a_405_allows_every_method_the_path_is_served_with(
    client: httpx.AsyncClient,
) -> None:
    # GET and POST /items are two routes; Starlette's own 405 named only the first.
    response = await client.put("/api/v1/items")
    _assert_problem(response, 405)
    assert response.headers["allow"] == "GET, POST"


async def test_a_static_path_beside_an_id_is_not_taken_for_an_id(
    client: httpx.AsyncClient,
) -> None:
    # PUT /items/{item_id} used to take `exports` for an id and answer 422.
    response = await client.put("/api/v1/items/exports", json={})
    _assert_problem(response, 405)
    assert response.headers["allow"] == "POST"


async def test_validation_problem_lists_field_errors_without_echoing_input(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/api/v1/auth/register", json={"email": "nope", "password": "s3cret-but-short"[:6]}
    )
    body = _assert_problem(response, 422)
    assert body["type"] == "urn:problem:validation-error"
    errors = body["errors"]
    assert isinstance(errors, list)
    assert {error["field"] for error in errors} == {"body.email", "body.password"}
    assert all(set(error) == {"field", "message", "type"} for error in errors)
    assert "s3cret" not in response.text


async def test_malformed_json_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/auth/register", content=b'{"email": ', headers={"content-type": "application/json"}
    )
    _assert_problem(response, 422)


async def test_declared_oversized_body_is_413_before_it_is_read(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/auth/register",
        content=b"x" * 10,
        headers={"content-type": "application/json", "content-length": str(2 * 1024 * 1024)},
    )
    _assert_problem(response, 413)


async def test_streamed_oversized_body_is_413(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(40):
            yield b" " * 65536

    account = await create_account(client)
    response = await client.post(
        "/api/v1/items",
        content=chunks(),
        headers=account.headers | {"content-type": "application/json"},
    )
    _assert_problem(response, 413)


async def test_invalid_content_length_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/auth/register", content=b"{}", headers={"content-length": "abc"}
    )
    _assert_problem(response, 400)


async def test_a_well_formed_request_id_is_echoed(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/missing", headers={"X-Request-ID": "abc-123-def-456"})
    assert response.headers["x-request-id"] == "abc-123-def-456"
    assert response.json()["request_id"] == "abc-123-def-456"


@pytest.mark.parametrize("bad", ["short", "x" * 129, "has space in it", "<script>alert</script>"])
async def test_a_malformed_request_id_is_replaced(client: httpx.AsyncClient, bad: str) -> None:
    response = await client.get("/health/live", headers={"X-Request-ID": bad})
    assert response.headers["x-request-id"] != bad
    assert len(response.headers["x-request-id"]) == 32


async def test_a_bug_is_a_500_problem_without_a_stack_trace() -> None:
    app = create_app(build_test_settings())

    @app.get("/boom")
    async def boom() -> None:
        msg = "secret internal detail"
        raise RuntimeError(msg)

    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            response = await http.get("/boom", headers={"X-Request-ID": "req-500-check"})
    body = _assert_problem(response, 500)
    assert body["request_id"] == "req-500-check"
    assert "secret internal detail" not in response.text
    assert "Traceback" not in response.text


@pytest.mark.allow_server_errors
async def test_an_invalid_response_is_a_500_problem_and_the_log_keeps_the_values_out(
    client: httpx.AsyncClient, served: ServedApp, caplog: pytest.LogCaptureFixture
) -> None:
    # A bug stand-in: the current user comes back without an id and with a role that
    # does not exist, so `UserRead` refuses the answer of GET /users/me.
    broken = User(email="canary-person@example.com", hashed_password="x", role="emperor")
    served.app.dependency_overrides[get_current_user] = lambda: broken
    caplog.set_level(logging.ERROR, logger="app.core.errors")
    response = await client.get("/api/v1/users/me")
    body = _assert_problem(response, 500)
    assert body["detail"] == "An unexpected error occurred."
    assert "canary-person" not in response.text
    (record,) = [r for r in caplog.records if r.name == "app.core.errors"]
    logged = record.getMessage()
    assert "response validation failed on GET /api/v1/users/me" in logged
    assert "response.id (uuid_type)" in logged
    assert "response.role (enum)" in logged
    assert "emperor" not in logged
    assert "canary-person" not in logged
