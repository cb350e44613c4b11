"""The one builder of everything that holds a connection.

`Resources.open(settings)` is used by both sides of the service: the FastAPI lifespan
(which yields it as lifespan state) and the ARQ worker's `on_startup` (which keeps it in
`ctx`). Nothing here runs at import time.
"""

from __future__ import annotations

import logging
import platform
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from arq import ArqRedis
from arq.connections import RedisSettings as ArqRedisSettings
from redis.asyncio import Redis
from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from app.core.breaker import Breaker
from app.core.cache import ACCOUNT_CACHE_SLOT, VersionedCache, cache_info
from app.core.config import ASYNCPG_NUMERIC_OPTIONS, DatabaseSettings, Settings
from app.core.db import session_scope
from app.core.events import EventPublisher, events_info
from app.core.jobs import job_info
from app.core.pool import FairRedisPool, GuardedPool, guard
from app.core.ratelimit import RateLimiter
from app.core.security import PasswordHasher, TokenCodec
from app.core.storage import LocalStorage, Storage

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Resources:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    redis: Redis
    arq: ArqRedis
    passwords: PasswordHasher
    tokens: TokenCodec
    storage: Storage
    events: EventPublisher
    limiter: RateLimiter
    cache: VersionedCache
    accounts: VersionedCache  # app.auth.accounts

    @classmethod
    @asynccontextmanager
    async def open(cls, settings: Settings, *, role: str = "api") -> AsyncIterator[Resources]:
        # Every client here connects lazily: the API starts (and reports "not ready")
        # even while PostgreSQL or Redis is down, and recovers when they return.
        async with AsyncExitStack() as stack:
            engine = build_engine(settings, role=role)
            stack.push_async_callback(engine.dispose)
            redis = build_redis(settings)
            stack.push_async_callback(redis.aclose, close_connection_pool=True)
            arq = build_arq(settings)
            stack.push_async_callback(arq.aclose, close_connection_pool=True)
            passwords = PasswordHasher.from_settings(settings.auth)
            stack.callback(passwords.close)
            yield cls(
                settings=settings,
                engine=engine,
                sessionmaker=async_sessionmaker(engine, expire_on_commit=False),
                redis=redis,
                arq=arq,
                passwords=passwords,
                tokens=TokenCodec(settings.auth),
                storage=LocalStorage(settings.storage_dir),
                events=EventPublisher(redis, settings.realtime),
                limiter=RateLimiter(redis),
                cache=VersionedCache(redis, ttl_seconds=settings.item_cache_seconds),
                accounts=VersionedCache(redis, ttl_seconds=settings.auth.account_cache_seconds),
            )

    def session_info(self) -> dict[str, object]:
        """What a session needs to enqueue jobs, publish events and update the cache
        after its commit."""
        return (
            job_info(self.arq)
            | events_info(self.events)
            | cache_info(self.cache)
            | cache_info(self.accounts, slot=ACCOUNT_CACHE_SLOT)
        )

    def session(self) -> AbstractAsyncContextManager[AsyncSession]:
        """A unit of work (`session_scope`) that may enqueue jobs and publish events."""
        return session_scope(self.sessionmaker, info=self.session_info())


# How much longer than the statement timeout the service waits for PostgreSQL to answer:
# a slow statement is cancelled by the server (its connection stays usable); only a
# server that does not answer at all runs into the client's own limit.
COMMAND_TIMEOUT_MARGIN_SECONDS = 0.5


def application_name(project_name: str, role: str) -> str:
    """What `pg_stat_activity` shows for this process's connections: the service, its
    role (api, worker) and host, within PostgreSQL's 63 bytes."""
    name = f"{project_name} {role}@{platform.node()}"
    return name.encode()[:63].decode(errors="ignore")


def _unique_statement_name() -> str:
    # Behind a transaction-mode pooler, connections of several processes share one
    # server session: asyncpg's per-connection counter (__asyncpg_stmt_1__) collides.
    return f"__asyncpg_{uuid.uuid4().hex}__"


def driver_options(db: DatabaseSettings) -> tuple[str, dict[str, Any]]:
    """The URL without asyncpg's own options, and the connect arguments for them,
    typed: asyncpg wants numbers where the query string has text
    (`?statement_cache_size=0` would fail every connection with a TypeError)."""
    url = make_url(db.url)
    options = [name for name in url.query if name in ASYNCPG_NUMERIC_OPTIONS]
    typed = {}
    for name in options:
        value = url.query[name]
        typed[name] = ASYNCPG_NUMERIC_OPTIONS[name](value if isinstance(value, str) else value[-1])
    stripped = url.difference_update_query(options)
    return stripped.render_as_string(hide_password=False), typed


def connect_args(db: DatabaseSettings, *, application: str) -> dict[str, Any]:
    """asyncpg's connect arguments for these settings, the pooler mode included."""
    server_settings = {"application_name": application}
    command_timeout = None
    if db.statement_timeout_ms:
        command_timeout = db.statement_timeout_ms / 1000 + COMMAND_TIMEOUT_MARGIN_SECONDS
        if not db.pgbouncer:  # a pooler refuses startup parameters it does not track
            server_settings["statement_timeout"] = str(db.statement_timeout_ms)
    args: dict[str, Any] = {
        "timeout": db.connect_timeout,
        "command_timeout": command_timeout,
        "server_settings": server_settings,
    }
    if db.pgbouncer:
        # No prepared statement outlives its transaction: neither asyncpg's cache nor
        # SQLAlchemy's, and each gets a name no other client of the pooler uses.
        args |= {
            "statement_cache_size": 0,
            "prepared_statement_cache_size": 0,
            "prepared_statement_name_func": _unique_statement_name,
        }
    return args | driver_options(db)[1]


def log_pool_share(settings: Settings, *, role: str) -> None:
    """State at startup how many database connections this process may open: the sum
    over every process must fit PostgreSQL's max_connections (or the pooler's
    max_client_conn); docs/deployment.md, "Sizing the pools"."""
    db = settings.database
    logger.info(
        "%s process: up to %d database connections (DATABASE_POOL_SIZE %d + "
        "DATABASE_MAX_OVERFLOW %d)%s",
        role,
        db.pool_size + db.max_overflow,
        db.pool_size,
        db.max_overflow,
        " through a transaction-mode pooler" if db.pgbouncer else "",
    )


def build_engine(settings: Settings, *, role: str = "api") -> AsyncEngine:
    db = settings.database
    url, _ = driver_options(db)
    engine = create_async_engine(
        url,
        echo=db.echo,
        # Bound values (emails, hashes) stay out of error messages and logs, unless
        # SQL echo was asked for while debugging.
        hide_parameters=not db.echo,
        poolclass=GuardedPool,
        pool_size=db.pool_size,
        max_overflow=db.max_overflow,
        pool_timeout=db.pool_timeout,
        pool_recycle=db.pool_recycle,
        pool_pre_ping=db.pool_pre_ping,
        connect_args=connect_args(db, application=application_name(settings.project_name, role)),
    )
    if db.pgbouncer and db.statement_timeout_ms:
        limit_each_transaction(engine, db.statement_timeout_ms)
    guard(engine.sync_engine, Breaker(db.breaker_cooldown_seconds))
    return engine


def limit_each_transaction(engine: AsyncEngine, statement_timeout_ms: int) -> None:
    """The statement timeout as the first statement of every transaction (`SET LOCAL`
    ends with it), for a pooler that hands each transaction to any server session."""
    statement = f"SET LOCAL statement_timeout = {int(statement_timeout_ms)}"

    @event.listens_for(engine.sync_engine, "begin")
    def _limit(connection: Connection) -> None:
        connection.exec_driver_sql(statement)


def build_redis(settings: Settings, *, socket_timeout: float | None = None) -> Redis:
    # With every connection busy, a command waits (up to the socket timeout, first come,
    # first served) for one to come back. redis-py's plain pool raises "Too many
    # connections" at once, which under a burst of requests turned into 503s (found by
    # make bench); its blocking one lets newcomers overtake (app.core.pool).
    pool = FairRedisPool.from_url(
        settings.redis.url,
        timeout=settings.redis.socket_timeout,
        decode_responses=True,
        max_connections=settings.redis.max_connections,
        socket_timeout=socket_timeout or settings.redis.socket_timeout,
        socket_connect_timeout=settings.redis.socket_timeout,
        health_check_interval=30,
    )
    return Redis(connection_pool=pool)


def build_arq(settings: Settings) -> ArqRedis:
    # ARQ pickles job arguments, so its client speaks bytes: a pool of its own.
    pool = FairRedisPool.from_url(
        settings.redis.url,
        timeout=settings.redis.socket_timeout,
        max_connections=settings.redis.max_connections,
        socket_timeout=settings.redis.socket_timeout,
        socket_connect_timeout=settings.redis.socket_timeout,
    )
    return ArqRedis(pool)


def arq_redis_settings(settings: Settings) -> ArqRedisSettings:
    """Connection settings for an ARQ `Worker`, from the same `REDIS_URL`."""
    arq_settings = ArqRedisSettings.from_dsn(settings.redis.url)
    arq_settings.conn_timeout = max(1, int(settings.redis.socket_timeout))
    return arq_settings
