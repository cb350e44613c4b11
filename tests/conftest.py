"""The real services, owned by the tests.

- PostgreSQL: the database `app_test` (TEST_DATABASE_NAME) on the server of
  DATABASE_URL is dropped, re-created and migrated with Alembic once per run. Each test
  runs inside one outer transaction that is rolled back at the end; the app's sessions
  join it through savepoints, so a test sees its own writes and leaves nothing behind.
- Redis: database index 15 (TEST_REDIS_DB) on the server of REDIS_URL, flushed before
  each test. No other database is touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Protocol

import httpx
import pytest
import pytest_asyncio
from alembic import command
from alembic.config import Config
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from pydantic import SecretStr
from redis.asyncio import Redis
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker
from starlette.types import ASGIApp

from app.core.config import (
    PROJECT_ROOT,
    AuthSettings,
    DatabaseSettings,
    Environment,
    FilesSettings,
    MailSettings,
    RateLimitSettings,
    RedisSettings,
    Settings,
)
from app.core.database_admin import recreate_database
from app.core.db import Base
from app.core.dependencies import get_sessionmaker
from app.core.resources import Resources
from app.main import create_app
from app.worker import create_worker

DEFAULT_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/app"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def _test_database_url() -> str:
    server = make_url(os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL))
    name = os.environ.get("TEST_DATABASE_NAME", "app_test")
    return server.set(database=name).render_as_string(hide_password=False)


def _test_redis_url() -> str:
    server = make_url(os.environ.get("REDIS_URL", DEFAULT_REDIS_URL))
    return server.set(database=os.environ.get("TEST_REDIS_DB", "15")).render_as_string(
        hide_password=False
    )


def build_test_settings(**changes: object) -> Settings:
    """Settings for tests; no `.env` file is read, so a developer's setup cannot leak in."""
    options: dict[str, object] = {
        "environment": Environment.test,
        "database": DatabaseSettings(_env_file=None, url=_test_database_url(), pool_size=5),
        "redis": RedisSettings(_env_file=None, url=_test_redis_url()),
        # Cheap argon2 parameters keep the suite fast; production defaults are tested
        # in test_settings.py.
        "auth": AuthSettings(
            _env_file=None,
            jwt_secret=SecretStr("test-secret-that-is-long-enough-for-hs256-0123456789"),
            argon2_time_cost=1,
            argon2_memory_kib=1024,
        ),
        "mail": MailSettings(_env_file=None),
        # Each app started would collect the whole suite's heap first (25 s of the
        # suite's time); the session's `served` app runs with the default.
        "gc_young_threshold": 0,
    }
    options |= changes
    return Settings(_env_file=None, **options)  # type: ignore[arg-type]


# Small upload limits, so the tests can pass them cheaply; the defaults are checked in
# test_settings.py.
TEST_FILES = {
    "max_file_bytes": 256 * 1024,
    "max_request_bytes": 1024 * 1024,
    "max_files_per_request": 4,
}


# Generous limits: tests create many accounts from one address; tests/core/
# test_ratelimits.py builds apps with small ones.
GENEROUS_LIMITS = {
    "per_caller_per_minute": 100_000,
    "anonymous_per_minute": 100_000,
    "registrations_per_hour": 100_000,
    "recoveries_per_hour": 100_000,
}


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return build_test_settings(
        storage_dir=tmp_path_factory.mktemp("storage"),
        files=FilesSettings(_env_file=None, **TEST_FILES),  # type: ignore[arg-type]
        rate_limit=RateLimitSettings(_env_file=None, **GENEROUS_LIMITS),  # type: ignore[arg-type]
    )


def migrate(database_url: str, revision: str = "head", *, down: bool = False) -> None:
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.attributes["database_url"] = database_url
    config.attributes["configure_logger"] = False
    if down:
        command.downgrade(config, revision)
    else:
        command.upgrade(config, revision)


@pytest_asyncio.fixture(scope="session")
async def resources(settings: Settings) -> AsyncIterator[Resources]:
    await recreate_database(settings.database.url)
    # Alembic's env.py runs its own event loop, so it gets a thread of its own.
    await asyncio.to_thread(migrate, settings.database.url)
    async with Resources.open(settings) as opened:
        yield opened


@dataclass(frozen=True)
class ServedApp:
    app: FastAPI
    # The app wrapped by the lifespan manager, which hands it the lifespan state.
    asgi: ASGIApp


@pytest_asyncio.fixture(scope="session")
async def served(resources: Resources, settings: Settings) -> AsyncIterator[ServedApp]:
    default = Settings.model_fields["gc_young_threshold"].default
    application = create_app(settings.model_copy(update={"gc_young_threshold": default}))
    async with LifespanManager(application) as manager:
        yield ServedApp(app=application, asgi=manager.app)


@contextlib.asynccontextmanager
async def app_client(
    settings: Settings, *, base_url: str = "http://testserver"
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app built with other settings (its sessions commit for real: keep
    its requests read-only, or use `committed`)."""
    async with LifespanManager(create_app(settings)) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as http:
            yield http


@pytest_asyncio.fixture
async def redis(resources: Resources) -> Redis:
    await resources.redis.flushdb()
    return resources.redis


@pytest_asyncio.fixture
async def connection(resources: Resources) -> AsyncIterator[AsyncConnection]:
    async with resources.engine.connect() as conn:
        transaction = await conn.begin()
        try:
            yield conn
        finally:
            await transaction.rollback()


@pytest.fixture
def sessionmaker(connection: AsyncConnection) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(
        bind=connection, expire_on_commit=False, join_transaction_mode="create_savepoint"
    )


@pytest_asyncio.fixture
async def db(sessionmaker: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session inside the test's transaction, to arrange and inspect stored state."""
    async with sessionmaker() as session:
        yield session


async def _refuse_server_errors(response: httpx.Response) -> None:
    if response.status_code >= 500 and response.status_code != 503:
        await response.aread()
        request = response.request
        msg = f"{request.method} {request.url} answered {response.status_code}: {response.text}"
        raise AssertionError(msg)


@pytest_asyncio.fixture
async def client(
    request: pytest.FixtureRequest,
    served: ServedApp,
    sessionmaker: async_sessionmaker[AsyncSession],
    redis: Redis,
) -> AsyncIterator[httpx.AsyncClient]:
    """The app over ASGI, every session bound to this test's transaction; any 5xx
    other than 503 fails the test (unless it is marked `allow_server_errors`)."""
    served.app.dependency_overrides[get_sessionmaker] = lambda: sessionmaker
    allowed = request.node.get_closest_marker("allow_server_errors") is not None
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=served.asgi, raise_app_exceptions=not allowed),
        base_url="http://testserver",
        event_hooks={"response": [] if allowed else [_refuse_server_errors]},
    ) as http:
        yield http
    served.app.dependency_overrides.clear()


async def _empty_every_table(resources: Resources) -> None:
    tables = ", ".join(f'"{name}"' for name in Base.metadata.tables)
    async with resources.engine.begin() as conn:
        await conn.exec_driver_sql(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")


@pytest_asyncio.fixture
async def committed(resources: Resources, redis: Redis) -> AsyncIterator[Resources]:
    """The real resources, for tests whose writes must really commit (so that other
    connections or processes see them). Every table is emptied after the test."""
    try:
        yield resources
    finally:
        await _empty_every_table(resources)


@pytest_asyncio.fixture
async def committed_client(
    served: ServedApp, committed: Resources
) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its own pool and real commits, for tests that send concurrent
    requests (one shared test connection cannot run them). Every table is emptied after
    the test; any 5xx other than 503 fails it."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=served.asgi),
        base_url="http://testserver",
        event_hooks={"response": [_refuse_server_errors]},
    ) as http:
        yield http


class RunJobs(Protocol):
    async def __call__(self, *, settings: Settings | None = None) -> int: ...


@pytest.fixture
def run_jobs(
    settings: Settings, resources: Resources, sessionmaker: async_sessionmaker[AsyncSession]
) -> RunJobs:
    """Run a real ARQ worker in burst mode until the queue is empty (deferred retries
    included); returns the number of jobs that completed. `settings` overrides the
    worker's settings (for example, to send mail to a test SMTP server)."""

    async def run(*, settings: Settings | None = None) -> int:
        worker_settings = settings or resources.settings
        worker = create_worker(
            worker_settings,
            burst=True,
            handle_signals=False,
            poll_delay=0.01,
            # One job at a time: every job shares this test's single connection.
            max_jobs=1,
            # Cron jobs run when a test asks for them, not on every drain.
            cron_jobs=[],
            ctx={
                "settings": worker_settings,
                "resources": replace(
                    resources, settings=worker_settings, sessionmaker=sessionmaker
                ),
            },
        )
        try:
            await worker.main()
        finally:
            await worker.close()
        return worker.jobs_complete

    return run
