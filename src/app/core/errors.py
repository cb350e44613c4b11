"""Domain errors and their rendering as RFC 9457 problem details.

Services raise the classes below; `install_error_handlers` maps every error the service
can answer (its own, Starlette's, validation, an unreachable database or Redis, and any
bug) to one `application/problem+json` shape:
`{type, title, status, detail, instance, request_id, errors?}`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError, ResponseValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from app.core.breaker import is_unreachable, pooler_hint
from app.core.context import request_id_from_scope
from app.core.observability import REDIS_ERRORS
from app.core.retry import is_transient, mark_retryable
from app.core.schemas import add_component_schemas

logger = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


class AppError(Exception):
    """An error a service raises; it carries its HTTP status and a stable code."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal-error"
    # True when the transaction's writes must be kept although the request fails
    # (revoking a token family after a refresh token was replayed).
    keep_writes: ClassVar[bool] = False

    def __init__(self, detail: str, *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = dict(headers or {})


class BadRequest(AppError):
    status = 400
    code = "bad-request"


class Unauthorized(AppError):
    status = 401
    code = "unauthorized"

    def __init__(self, detail: str, *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer", **(headers or {})})


class Forbidden(AppError):
    status = 403
    code = "forbidden"


class NotFound(AppError):
    status = 404
    code = "not-found"


class Conflict(AppError):
    status = 409
    code = "conflict"


class PreconditionFailed(AppError):
    status = 412
    code = "precondition-failed"


class UnprocessableContent(AppError):
    status = 422
    code = "validation-error"

    def __init__(self, detail: str, *, field: str, type_: str = "value_error") -> None:
        super().__init__(detail)
        self.errors = [{"field": field, "message": detail, "type": type_}]


class TooManyRequests(AppError):
    status = 429
    code = "too-many-requests"

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail, headers={"Retry-After": str(max(1, retry_after))})


class ServiceUnavailable(AppError):
    status = 503
    code = "service-unavailable"

    def __init__(self, detail: str, *, retry_after: int = 5) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)})


class NotModified(Exception):
    """Answer 304 to a conditional GET whose validator still matches; `headers` are the
    ones a 200 would carry (ETag, Cache-Control)."""

    def __init__(self, headers: Mapping[str, str]) -> None:
        super().__init__("not modified")
        self.headers = dict(headers)


class FieldError(BaseModel):
    field: str
    message: str
    type: str


class Problem(BaseModel):
    """An RFC 9457 problem details body."""

    type: str
    title: str
    status: int
    detail: str
    instance: str
    request_id: str | None
    errors: list[FieldError] | None = None


def problem_responses(
    *statuses: int, described: Mapping[int, str] | None = None
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries documenting problem+json bodies for `statuses`, and
    for the statuses of `described`, each with its text saying when it happens (the
    others say their status phrase).

    The `Problem` schema they point to is added by `add_problem_schemas` (a `model` key
    would also document an `application/json` body, which the service never sends).
    """
    descriptions = {status: HTTPStatus(status).phrase for status in statuses}
    descriptions |= dict(described or {})
    return {
        status: {
            "description": description,
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status, description in descriptions.items()
    }


def add_problem_schemas(openapi: dict[str, Any], *, api_prefix: str) -> None:
    add_component_schemas(openapi, (Problem,), mode="validation")
    _document_shared_problems(openapi, api_prefix)


_RATE_LIMITED = "Too many requests from this caller; retry after `Retry-After` seconds"
_UNAVAILABLE = (
    "PostgreSQL or Redis is unavailable, or the request collided with a concurrent one "
    "twice; retry after `Retry-After` seconds"
)
_MISSING_SCOPE = "The credential lacks a scope this operation needs (an API key's scopes)"
_KEY_IN_FLIGHT = "A request with this `Idempotency-Key` is still in progress; retry later"
_KEY_REUSED = (
    "this `Idempotency-Key` was already used with a different request "
    "(`urn:problem:idempotency-key-reused`)"
)


def _document_shared_problems(openapi: dict[str, Any], api_prefix: str) -> None:
    """Statuses that come from shared machinery rather than from one path operation:
    a body that cannot be parsed at all (not JSON, not UTF-8, a broken multipart) is a
    400; every API route has a rate limit (429) and needs PostgreSQL or Redis (503); a
    route that needs a scope refuses a credential without it (403); and an
    `Idempotency-Key` in flight is a 409, one bound to another request a 422."""
    for path, operations in openapi.get("paths", {}).items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            statuses: list[int] = []
            described: dict[int, str] = {}
            if "requestBody" in operation:
                statuses.append(400)
            if path.startswith(api_prefix):
                described |= {429: _RATE_LIMITED, 503: _UNAVAILABLE}
            if any(any(scopes) for scopes in _security_scopes(operation)):
                described[403] = _MISSING_SCOPE
            if _takes_idempotency_key(operation):
                described[409] = _KEY_IN_FLIGHT
                invalid = responses.setdefault("422", problem_responses(422)[422])
                invalid["description"] = f"{invalid['description']}; or {_KEY_REUSED}"
            for status, entry in problem_responses(*statuses, described=described).items():
                responses.setdefault(str(status), entry)


def _security_scopes(operation: dict[str, Any]) -> list[list[str]]:
    return [
        scopes for requirement in operation.get("security", []) for scopes in requirement.values()
    ]


def _takes_idempotency_key(operation: dict[str, Any]) -> bool:
    return any(
        parameter.get("in") == "header" and str(parameter.get("name")).lower() == "idempotency-key"
        for parameter in operation.get("parameters", [])
    )


def problem(
    request: Request,
    *,
    status: int,
    detail: str | None = None,
    code: str | None = None,
    errors: Sequence[Mapping[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    request_id = request_id_from_scope(request.scope)
    body: dict[str, Any] = {
        "type": f"urn:problem:{code}" if code else "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail or HTTPStatus(status).description,
        "instance": request.url.path,
        "request_id": request_id,
    }
    if errors is not None:
        body["errors"] = list(errors)
    response_headers = dict(headers or {})
    # An error describes one moment (a 429, a 503, a 404 before a create): never kept.
    response_headers.setdefault("Cache-Control", "no-store")
    if request_id:
        response_headers.setdefault("X-Request-ID", request_id)
    return JSONResponse(body, status_code=status, headers=response_headers, media_type=PROBLEM_JSON)


async def _app_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AppError)
    errors = getattr(exc, "errors", None)
    return problem(
        request,
        status=exc.status,
        detail=exc.detail,
        code=exc.code,
        errors=errors,
        headers=exc.headers,
    )


async def _not_modified(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, NotModified)
    return Response(status_code=304, headers=exc.headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    headers = exc.headers
    if exc.status_code == 405:
        headers = {**(headers or {}), "Allow": _allowed_methods(request)}
    return problem(request, status=exc.status_code, detail=exc.detail, headers=headers)


def _allowed_methods(request: Request) -> str:
    """Every method the path is served with. Starlette's 405 names only the methods of
    the first route whose path matched, and `/items` has one route per method. Each
    method is matched as its own request would be, so nested routers count too."""
    allowed = [
        method
        for method in _HTTP_METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL
            for route in request.app.router.routes
        )
    ]
    return ", ".join(allowed)


_HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _field_name(loc: Sequence[str | int]) -> str:
    return ".".join(str(part) for part in loc)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    # The submitted values are left out on purpose: they may be passwords or tokens.
    errors = [
        {"field": _field_name(error["loc"]), "message": error["msg"], "type": error["type"]}
        for error in exc.errors()
    ]
    return problem(
        request,
        status=422,
        detail="The request is invalid; see `errors`.",
        code="validation-error",
        errors=errors,
    )


async def _dependency_down(request: Request, exc: Exception) -> Response:
    hint = pooler_hint(exc)
    if hint is not None:
        logger.error("database refused the connection: %s: %s; %s", type(exc).__name__, exc, hint)
    else:
        logger.warning("backing service unavailable: %s: %s", type(exc).__name__, exc)
    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        REDIS_ERRORS.labels("request").inc()
    return _unavailable(request, "A service this request needs is unavailable; retry shortly.")


def _unavailable(request: Request, detail: str, *, retry_after: int = 5) -> Response:
    return problem(
        request,
        status=503,
        detail=detail,
        code="service-unavailable",
        headers={"Retry-After": str(retry_after)},
    )


async def _invalid_response(request: Request, exc: Exception) -> Response:
    """A path operation returned data its response model refuses: a bug, so a 500. The
    log names the fields and what was wrong, never the values (the object may hold
    hashes, tokens or someone's personal data), unlike the exception's own text."""
    assert isinstance(exc, ResponseValidationError)
    problems = "; ".join(f"{_field_name(error['loc'])} ({error['type']})" for error in exc.errors())
    logger.error(
        "response validation failed on %s %s: %s", request.method, request.url.path, problems
    )
    return problem(
        request, status=500, detail="An unexpected error occurred.", code="internal-error"
    )


async def _unhandled(request: Request, exc: Exception) -> Response:
    logger.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem(
        request, status=500, detail="An unexpected error occurred.", code="internal-error"
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(NotModified, _not_modified)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ResponseValidationError, _invalid_response)
    for unavailable in (
        PoolTimeoutError,
        RedisConnectionError,
        RedisTimeoutError,
        ConnectionError,
        TimeoutError,
    ):
        app.add_exception_handler(unavailable, _dependency_down)
    app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(Exception, _unhandled)


# SQLSTATEs that mean the client sent something the database refuses, not a bug.
_INVALID_TEXT = {"22021", "22P05"}  # e.g. a NUL character in a string
_CONFLICTS = {"23505", "23503"}  # unique violation, foreign key violation
# The server cancelled a statement that ran past DATABASE_STATEMENT_TIMEOUT_MS.
_STATEMENT_TIMEOUT = "57014"


async def _database_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DBAPIError)
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if sqlstate in _INVALID_TEXT:
        return problem(
            request,
            status=422,
            detail="The request contains text the service cannot store (such as a NUL character)",
            code="validation-error",
            errors=[],
        )
    if sqlstate in _CONFLICTS:
        # A concurrent request got there first; services check the usual cases
        # themselves, this covers the races.
        return problem(
            request,
            status=409,
            detail="The request conflicts with the current state; fetch it and retry",
            code="conflict",
        )
    # A dropped connection, or a server that refuses new ones while it shuts down or
    # starts up, means the database is unavailable; anything else is a bug.
    if is_unreachable(exc):
        return await _dependency_down(request, exc)
    if is_transient(exc):
        # Rolled back by the server (a deadlock, a serialization failure): the request
        # runs once more (app.core.retry); this answer only goes out if that fails too.
        logger.warning(
            "transient database error %s on %s %s", sqlstate, request.method, request.url.path
        )
        mark_retryable(request.scope)
        return _unavailable(
            request, "The request collided with a concurrent one; retry it.", retry_after=1
        )
    if sqlstate == _STATEMENT_TIMEOUT:
        logger.warning("statement timeout on %s %s", request.method, request.url.path)
        return _unavailable(request, "The request took too long; retry shortly.")
    # Anything else from the driver (a prepared statement a pooler lost, a protocol
    # error, an internal error of the server) is the database's trouble, not the
    # client's: logged with its traceback, answered as unavailable, never a 500.
    hint = pooler_hint(exc)
    logger.error(
        "database error %s on %s %s%s",
        sqlstate or type(exc.orig).__name__,
        request.method,
        request.url.path,
        f"; {hint}" if hint else "",
        exc_info=exc,
    )
    return _unavailable(request, "The database could not complete the request; retry shortly.")
