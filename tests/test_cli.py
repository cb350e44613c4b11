"""The `app` command, run as a user would: a subprocess with its own environment."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy import func, insert, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from app.core.config import Settings
from app.core.database_admin import drop_database
from app.core.ids import uuid7
from app.models import Item, Role, User


def _app(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "app", *args],
        env={"PATH": os.environ["PATH"], "HOME": str(cwd), **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def base_env(settings: Settings) -> dict[str, str]:
    return {"DATABASE_URL": settings.database.url, "REDIS_URL": settings.redis.url}


@pytest_asyncio.fixture
async def cli_database(settings: Settings) -> AsyncIterator[str]:
    url = make_url(settings.database.url)
    name = url.set(database=f"{url.database}_cli").render_as_string(hide_password=False)
    await drop_database(name)
    yield name
    await drop_database(name)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "DATABASE_URL",
            "postgresql+asyncpg://postgres@127.0.0.1:1/app",
            "cannot reach PostgreSQL at",
        ),
        ("REDIS_URL", "redis://127.0.0.1:1/0", "cannot reach Redis at"),
    ],
)
def test_unreachable_services_get_one_clear_line(
    base_env: dict[str, str], tmp_path: Path, variable: str, value: str, message: str
) -> None:
    result = _app(["check"], base_env | {variable: value}, tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {message}")
    assert "127.0.0.1:1" in lines[0]
    assert "docker compose up -d db redis" in lines[0]


def test_invalid_configuration_is_one_line(base_env: dict[str, str], tmp_path: Path) -> None:
    result = _app(["check"], base_env | {"ENVIRONMENT": "production"}, tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("error: invalid configuration:")
    assert "JWT_SECRET must be set" in result.stderr
    assert "Traceback" not in result.stderr


async def test_migrate_superuser_and_seed(
    base_env: dict[str, str], cli_database: str, tmp_path: Path
) -> None:
    env = base_env | {
        "DATABASE_URL": cli_database,
        "FIRST_SUPERUSER_EMAIL": "Root@Example.com",
        "FIRST_SUPERUSER_PASSWORD": "root-password-1",
        "ARGON2_MEMORY_KIB": "1024",
        "ARGON2_TIME_COST": "1",
    }
    migrated = _app(["migrate"], env, tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    assert f"created database {make_url(cli_database).database}" in migrated.stderr

    assert "created" in _app(["create-superuser"], env, tmp_path).stderr
    assert "already exists" in _app(["create-superuser"], env, tmp_path).stderr
    again = _app(["migrate"], env, tmp_path)
    assert again.returncode == 0
    assert "created database" not in again.stderr

    # An account that merely registered the address is not made admin by a redeploy.
    engine = create_async_engine(cli_database, poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                insert(User).values(
                    id=uuid7(), email="taken@example.com", hashed_password="x", role=Role.user
                )
            )
    finally:
        await engine.dispose()
    left = _app(["create-superuser", "--email", "taken@example.com"], env, tmp_path)
    assert "left unchanged" in left.stderr
    promoted = _app(
        ["create-superuser", "--email", "taken@example.com", "--promote"], env, tmp_path
    )
    assert "promoted to admin" in promoted.stderr

    seeded = _app(["seed", "--users", "60", "--items", "2"], env, tmp_path)
    assert seeded.returncode == 0, seeded.stderr
    assert "60/60" in seeded.stderr  # the progress bar reached the end

    engine = create_async_engine(cli_database, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            admins = await connection.scalar(
                select(func.count()).select_from(User).where(User.role == Role.admin)
            )
            users = await connection.scalar(select(func.count()).select_from(User))
            items = await connection.scalar(select(func.count()).select_from(Item))
    finally:
        await engine.dispose()
    assert (admins, users, items) == (2, 62, 120)


def test_create_superuser_if_configured_is_a_no_op_without_configuration(
    base_env: dict[str, str], tmp_path: Path
) -> None:
    result = _app(["create-superuser", "--if-configured"], base_env, tmp_path)
    assert result.returncode == 0
    assert "FIRST_SUPERUSER_EMAIL" in result.stderr
