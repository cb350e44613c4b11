"""FastAPI dependencies for the shared resources, as `Annotated` aliases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.requests import HTTPConnection

from app.core.db import session_scope
from app.core.resources import Resources


def _resources(connection: HTTPConnection) -> Resources:
    resources: Resources = connection.state.resources
    return resources


# Each reads the lifespan state itself rather than depending on `get_resources`: FastAPI
# does per-request work for every node of a route's dependency tree, cached or not, and
# these sit under most routes (twice under GET /items/{id}).


async def get_resources(connection: HTTPConnection) -> Resources:
    return _resources(connection)


ResourcesDep = Annotated[Resources, Depends(get_resources)]


async def get_redis(connection: HTTPConnection) -> Redis:
    return _resources(connection).redis


RedisDep = Annotated[Redis, Depends(get_redis)]


async def get_sessionmaker(connection: HTTPConnection) -> async_sessionmaker[AsyncSession]:
    """Overridden by the tests to bind every session to one rolled-back transaction."""
    return _resources(connection).sessionmaker


SessionmakerDep = Annotated[async_sessionmaker[AsyncSession], Depends(get_sessionmaker)]


async def get_session(
    resources: ResourcesDep, maker: SessionmakerDep
) -> AsyncIterator[AsyncSession]:
    async with session_scope(maker, info=resources.session_info()) as session:
        yield session


# scope="function": the commit runs before the response is sent, so a failed commit
# answers an error instead of a 2xx that lied.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
