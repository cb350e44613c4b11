"""The one builder of everything that holds a connection.

`Resources.open(settings)` is used by both sides of the service: the FastAPI lifespan
(which yields it as lifespan state) and the ARQ worker's `on_startup` (which keeps it in
`ctx`). Nothing here runs at import time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from arq import ArqRedis
from arq.connections import RedisSettings as ArqRedisSettings
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from app.core.breaker import Breaker
from app.core.cache import ACCOUNT_CACHE_SLOT, VersionedCache, cache_info
from app.core.config import Settings
from app.core.db import session_scope
from app.core.events import EventPublisher, events_info
from app.core.jobs import job_info
from app.core.pool import FairRedisPool, GuardedPool, guard
from app.core.ratelimit import RateLimiter
from app.core.security import PasswordHasher, TokenCodec
from app.core.storage import LocalStorage, Storage


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
    async def open(cls, settings: Settings) -> AsyncIterator[Resources]:
        # Every client here connects lazily: the API starts (and reports "not ready")
        # even while PostgreSQL or Redis is down, and recovers when they return.
        async with AsyncExitStack() as stack:
            engine = build_engine(settings)
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


def build_engine(settings: Settings) -> AsyncEngine:
    db = settings.database
    server_settings = {"application_name": settings.project_name[:63]}
    command_timeout = None
    if db.statement_timeout_ms:
        server_settings["statement_timeout"] = str(db.statement_timeout_ms)
        command_timeout = db.statement_timeout_ms / 1000 + COMMAND_TIMEOUT_MARGIN_SECONDS
    engine = create_async_engine(
        db.url,
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
        connect_args={
            "timeout": db.connect_timeout,
            "command_timeout": command_timeout,
            "server_settings": server_settings,
        },
    )
    guard(engine.sync_engine, Breaker(db.breaker_cooldown_seconds))
    return engine


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
