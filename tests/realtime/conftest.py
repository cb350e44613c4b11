"""Two live API processes on the test database and Redis index, shared by the realtime
tests; each test's accounts and items are real commits, emptied afterwards."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import update

from app.core.config import Settings
from app.core.resources import Resources
from app.models import Role, User
from tests.factories import Account, create_account
from tests.live import LiveServer, live_env, start_server

MAX_CONNECTIONS = 3
# Where links built outside a request (by the worker) point.
PUBLIC_BASE_URL = "https://api.example.test"
CLIENT_BUFFER = 20
RECHECK_SECONDS = 0.5


@dataclass
class Cluster:
    a: LiveServer
    b: LiveServer
    env: dict[str, str]


@pytest_asyncio.fixture(scope="session")
async def cluster(
    resources: Resources, settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Cluster]:
    env = live_env(
        settings,
        tmp_path_factory.mktemp("live-storage"),
        REALTIME_MAX_CONNECTIONS_PER_USER=str(MAX_CONNECTIONS),
        REALTIME_CLIENT_BUFFER=str(CLIENT_BUFFER),
        REALTIME_SEND_TIMEOUT_SECONDS="2",
        PUBLIC_BASE_URL=PUBLIC_BASE_URL,
        REALTIME_RECHECK_SECONDS=str(RECHECK_SECONDS),
    )
    a = await start_server(env)
    try:
        b = await start_server(env)
    except BaseException:
        a.stop()
        raise
    try:
        yield Cluster(a, b, env)
    finally:
        a.stop()
        b.stop()


@pytest_asyncio.fixture
async def api(cluster: Cluster, committed: Resources) -> AsyncIterator[httpx.AsyncClient]:
    """A client of process A (commits are real and emptied after the test)."""
    async with httpx.AsyncClient(base_url=cluster.a.url, timeout=10) as client:
        yield client


async def live_account(api: httpx.AsyncClient) -> Account:
    return await create_account(api)


async def promote(resources: Resources, account: Account) -> None:
    async with resources.session() as session:
        await session.execute(update(User).where(User.id == account.id).values(role=Role.admin))


async def demote(resources: Resources, account: Account) -> None:
    async with resources.session() as session:
        await session.execute(update(User).where(User.id == account.id).values(role=Role.user))
