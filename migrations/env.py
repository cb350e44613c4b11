"""Alembic environment, async: migrations run over the same asyncpg driver as the app.

The URL comes from `config.attributes["database_url"]` (set by `app migrate` and the
tests), else from DATABASE_URL through the app's settings.
"""

from __future__ import annotations

import asyncio
from logging.config import fileConfig

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

import app.models  # noqa: F401 - registers every table on Base.metadata
from app.core.config import DatabaseSettings
from app.core.db import Base
from app.core.resources import application_name, connect_args, driver_options

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _database_settings() -> DatabaseSettings:
    """DATABASE_* from the environment, the URL from the caller if it gave one; no
    statement timeout (an index build may take long)."""
    url = config.attributes.get("database_url")
    settings = DatabaseSettings(url=url) if isinstance(url, str) else DatabaseSettings()
    return settings.model_copy(update={"statement_timeout_ms": 0})


def _database_url() -> str:
    return driver_options(_database_settings())[0]


def run_migrations_offline() -> None:
    context.configure(
        url=_database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        compare_server_default=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_server_default=True,
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_migrations_online() -> None:
    settings = _database_settings()
    engine = create_async_engine(
        _database_url(),
        poolclass=NullPool,
        # Safe behind a transaction-mode pooler too (DATABASE_PGBOUNCER).
        connect_args=connect_args(settings, application=application_name("app", "migrate")),
    )
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_migrations_online())
