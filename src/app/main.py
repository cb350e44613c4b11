"""The application factory: lifespan, middleware, error handlers and routers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, TypedDict

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import RedirectResponse
from fastapi.routing import APIRoute
from fastapi.telemetry import TelemetryConfig
from starlette.types import ASGIApp

from app.api_keys.router import router as api_keys_router
from app.auth.credentials import revoked
from app.auth.ratelimits import ApiBudget
from app.auth.router import router as auth_router
from app.core.collector import tuned_collector
from app.core.config import Settings
from app.core.errors import add_problem_schemas, install_error_handlers, problem_responses
from app.core.http import API_PREFIX, is_operational
from app.core.idempotency import ReplayResponse, replay_handler
from app.core.lifecycle import Shutdown, drain_on_shutdown_signal
from app.core.logging import configure_logging
from app.core.middleware import (
    BodySizeLimitMiddleware,
    EdgeMiddleware,
    GZipWhenAcceptedMiddleware,
    HealthExemptTrustedHostMiddleware,
)
from app.core.resources import Resources, log_pool_share
from app.core.retry import RetryTransientMiddleware
from app.core.schemas import add_component_schemas, drop_null, openapi_operations
from app.files.router import UPLOAD_LIMIT_HEADERS, document_upload_limits
from app.files.router import router as files_router
from app.health.metrics import router as metrics_router
from app.health.router import LIVE_BODY, LIVE_PATH
from app.health.router import router as health_router
from app.items.router import router as items_router
from app.jobs.router import router as jobs_router
from app.realtime.hub import EventHub
from app.realtime.router import REFERENCED_MODELS as REALTIME_MODELS
from app.realtime.router import router as realtime_router
from app.users.router import router as users_router

OPENAPI_TAGS = [
    {"name": "auth", "description": "Accounts, tokens and password recovery."},
    {"name": "users", "description": "Your account, and every account for admins."},
    {
        "name": "api-keys",
        "description": "Personal API keys for machine clients, limited by scopes.",
    },
    {"name": "items", "description": "The main resource: CRUD, filters, search, ETags."},
    {
        "name": "files",
        "description": "Uploads streamed to storage, downloads with ranges, attachments.",
    },
    {"name": "jobs", "description": "Background jobs you started, and their files."},
    {
        "name": "events",
        "description": "Realtime events about your data, over Server-Sent Events or a "
        "WebSocket, from whichever process or worker made the change.",
    },
    {"name": "health", "description": "Liveness and readiness probes."},
]


class AppState(TypedDict):
    resources: Resources
    hub: EventHub
    shutdown: Shutdown


def _operation_id(route: APIRoute) -> str:
    # Stable, readable names for generated clients: `items-create_item`.
    tag = route.tags[0] if route.tags else "default"
    return f"{tag}-{route.name}"


def _parameters_are_never_null(openapi: dict[str, Any]) -> None:
    """An optional query or header parameter is absent or a string, never JSON null;
    FastAPI documents `str | None = None` as "string or null"."""
    for operation in openapi_operations(openapi):
        for parameter in operation.get("parameters", []):
            if not parameter.get("required"):
                drop_null(parameter.get("schema", {}))


def _streams_in_openapi_3_1(openapi: dict[str, Any]) -> None:
    """FastAPI documents a stream's items with `itemSchema`, which OpenAPI 3.2 added and
    a 3.1 media type may not hold. In 3.1 an event stream's `schema` describes one event
    (so Schemathesis reads it): the item schema becomes the schema. Other streams (JSON
    Lines) have no 3.1 form: it stays as the extension `x-itemSchema`, beside the
    response's description of each line."""
    for operation in openapi_operations(openapi):
        for response in operation.get("responses", {}).values():
            for media_type, content in response.get("content", {}).items():
                item = content.pop("itemSchema", None)
                if item is None:
                    continue
                if media_type == "text/event-stream" and "schema" not in content:
                    content["schema"] = item
                else:
                    content["x-itemSchema"] = item


def _customise_openapi(app: FastAPI, settings: Settings) -> None:
    """The generated document, completed once: the problem and event schemas, and what
    only this app's settings know (the upload's accepted types and file count)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            add_problem_schemas(schema, api_prefix=API_PREFIX)
            add_component_schemas(schema, REALTIME_MODELS)
            _parameters_are_never_null(schema)
            _streams_in_openapi_3_1(schema)
            document_upload_limits(schema["paths"][f"{API_PREFIX}/files"]["post"], settings.files)
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


# Exposed to browsers' scripts (CORS): what clients of this API need to read.
EXPOSED_HEADERS = [
    "ETag",
    "Location",
    "X-Request-ID",
    "Retry-After",
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
    "RateLimit-Policy",
    "Idempotent-Replayed",
    *UPLOAD_LIMIT_HEADERS,
]
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc"})


def _telemetry(settings: Settings) -> TelemetryConfig:
    """FastAPI's own OpenTelemetry, off unless OTEL_ENABLED. Its exception and
    validation log records stay off: they carry the request's input (passwords)."""
    enabled = settings.observability.otel_enabled
    return {
        "tracing": enabled,
        "metrics": enabled,
        "logs": False,
        "auto_configure": enabled,
        "exclude": lambda scope: is_operational(scope.get("path", "")),
    }


def _add_middleware(app: FastAPI, settings: Settings) -> None:
    """All pure ASGI, added innermost first. The edge layer wraps even Starlette's
    outermost error layer, so the request id, the security headers and the access log
    cover everything: 413s, refused hosts and the 500 of an unhandled exception."""
    # Innermost: a request the database rolled back runs again below every other layer,
    # so the client, the access log and the limits see one request.
    app.add_middleware(RetryTransientMiddleware)
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        per_path={f"{API_PREFIX}/files": settings.files.max_request_bytes},
        stall_seconds=settings.body_stall_timeout_seconds,
    )
    # Level 6 (zlib's default): level 9, Starlette's, costs about twice the CPU for a
    # few per cent smaller JSON.
    app.add_middleware(
        GZipWhenAcceptedMiddleware, minimum_size=settings.gzip_minimum_bytes, compresslevel=6
    )
    if settings.is_production:
        app.add_middleware(HealthExemptTrustedHostMiddleware, allowed_hosts=settings.trusted_hosts)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_credentials=False,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=EXPOSED_HEADERS,
        )
    build_stack = app.build_middleware_stack

    def build_behind_the_edge() -> ASGIApp:
        return EdgeMiddleware(
            build_stack(),
            docs_paths=DOCS_PATHS,
            hsts_seconds=settings.hsts_seconds,
            live_path=LIVE_PATH,
            live_body=LIVE_BODY,
        )

    app.build_middleware_stack = build_behind_the_edge  # type: ignore[method-assign]


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    configure_logging(settings.log_level, settings.resolved_log_format)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[AppState]:
        shutdown = Shutdown()
        async with (
            Resources.open(settings) as resources,
            EventHub(
                resources.redis, settings, revoked=partial(revoked, resources)
            ).running() as hub,
            drain_on_shutdown_signal(
                hub.drain,
                within=settings.realtime.drain_timeout_seconds,
                shutdown=shutdown,
                linger=settings.shutdown_drain_seconds,
            ),
        ):
            log_pool_share(settings, role="api")
            with tuned_collector(settings.gc_young_threshold):
                yield {"resources": resources, "hub": hub, "shutdown": shutdown}

    docs = settings.docs_on
    app = FastAPI(
        title=settings.project_name,
        version="1.0.0",
        summary="A production-grade async API: auth, items, files, realtime events and jobs.",
        license_info={"name": "MIT", "identifier": "MIT"},
        lifespan=lifespan,
        openapi_tags=OPENAPI_TAGS,
        openapi_url="/openapi.json" if docs else None,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        servers=[
            {
                "url": settings.public_base_url,
                "description": "The API as its clients reach it (PUBLIC_BASE_URL)",
            }
        ],
        generate_unique_id_function=_operation_id,
        swagger_ui_parameters={"persistAuthorization": True},
        responses=problem_responses(422, 500),
        telemetry=_telemetry(settings),
    )
    install_error_handlers(app)
    app.add_exception_handler(ReplayResponse, replay_handler)
    _customise_openapi(app, settings)
    _add_middleware(app, settings)

    # FastAPI matches a request against the routes one by one, and each level of
    # router nesting matches twice, so the probes come first, then the busiest
    # routers, each included one level deep under the version prefix.
    app.include_router(health_router)
    # Every HTTP route spends its caller's budget; the realtime router declares it on
    # its SSE route only (a WebSocket has no HTTP response to carry the headers).
    for router in (
        items_router,
        users_router,
        files_router,
        jobs_router,
        auth_router,
        api_keys_router,
    ):
        app.include_router(router, prefix=API_PREFIX, dependencies=[ApiBudget])
    app.include_router(realtime_router, prefix=API_PREFIX)
    if settings.observability.metrics_enabled:
        # Not served, so not documented, when no scraper credentials are configured.
        app.include_router(metrics_router)

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/docs" if docs else "/health/live")

    return app


app = create_app()
