"""Reachability checks and database creation, for the CLI (`app run`, `app migrate`)."""

from __future__ import annotations

from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

CONNECT_TIMEOUT_SECONDS = 5
_START_HINT = "start it (for example `docker compose up -d db redis`) or point {var} at it"


class ServiceUnreachable(Exception):
    """One line for the operator: what could not be reached, why, and what to do."""


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".strip().rstrip(":").splitlines()[0]


async def _server_scalar(url: URL, sql: str, **params: str) -> object:
    engine = create_async_engine(
        url,
        poolclass=NullPool,
        isolation_level="AUTOCOMMIT",
        connect_args={"timeout": CONNECT_TIMEOUT_SECONDS},
    )
    try:
        async with engine.connect() as connection:
            result = await connection.execute(text(sql), params)
            return result.scalar() if result.returns_rows else None
    finally:
        await engine.dispose()


def _quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _maintenance_url(database_url: str) -> URL:
    return make_url(database_url).set(database="postgres")


async def check_database_server(database_url: str) -> None:
    url = make_url(database_url)
    try:
        await _server_scalar(_maintenance_url(database_url), "SELECT 1")
    except Exception as exc:
        shown = url.render_as_string(hide_password=True)
        hint = _START_HINT.format(var="DATABASE_URL")
        msg = f"cannot reach PostgreSQL at {shown} ({_describe(exc)}); {hint}"
        raise ServiceUnreachable(msg) from exc


async def check_redis(redis_url: str) -> None:
    client = Redis.from_url(redis_url, socket_connect_timeout=CONNECT_TIMEOUT_SECONDS)
    try:
        await client.ping()
    except Exception as exc:
        hint = _START_HINT.format(var="REDIS_URL")
        shown = make_url(redis_url).render_as_string(hide_password=True)
        msg = f"cannot reach Redis at {shown} ({_describe(exc)}); {hint}"
        raise ServiceUnreachable(msg) from exc
    finally:
        await client.aclose()


async def ensure_database(database_url: str) -> str | None:
    """Create the database named in `database_url` if missing; its name if created."""
    await check_database_server(database_url)
    name = make_url(database_url).database
    assert name is not None
    maintenance = _maintenance_url(database_url)
    exists = await _server_scalar(
        maintenance, "SELECT 1 FROM pg_database WHERE datname = :name", name=name
    )
    if exists:
        return None
    await _server_scalar(maintenance, f"CREATE DATABASE {_quoted(name)}")
    return name


async def drop_database(database_url: str) -> None:
    """Drop the database, disconnecting its sessions: for test databases only."""
    name = make_url(database_url).database
    assert name is not None
    maintenance = _maintenance_url(database_url)
    await _server_scalar(maintenance, f"DROP DATABASE IF EXISTS {_quoted(name)} WITH (FORCE)")


async def recreate_database(database_url: str) -> None:
    """Drop and create the database: for test databases only."""
    await drop_database(database_url)
    name = make_url(database_url).database
    assert name is not None
    await _server_scalar(_maintenance_url(database_url), f"CREATE DATABASE {_quoted(name)}")
