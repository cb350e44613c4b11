"""What the benchmark and trial scripts share.

They run against their own database (`app_bench`, BENCH_DATABASE_NAME) on the server of
DATABASE_URL and their own Redis index (14, BENCH_REDIS_DB) on the server of REDIS_URL,
never the development or test ones, and start the service's processes the way an
operator does (`python -m app serve|worker`), with an explicit environment and a scratch
working directory, so no developer `.env` leaks in.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import IO
from uuid import UUID

import httpx
from alembic import command
from alembic.config import Config
from sqlalchemy import select
from sqlalchemy.engine import make_url

from app.core.config import (
    PROJECT_ROOT,
    AuthSettings,
    DatabaseSettings,
    MailSettings,
    RedisSettings,
    Settings,
    WorkerProcessSettings,
)
from app.core.database_admin import recreate_database
from app.core.ids import uuid7
from app.core.resources import Resources
from app.core.security import TokenType
from app.models import Item, User

DEFAULT_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/app"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
JWT_SECRET = "bench-secret-that-is-long-enough-for-hs256-0123456789"  # noqa: S105


def bench_env(
    *, database: str | None = None, redis_db: str | None = None, **extra: str
) -> dict[str, str]:
    """The environment of the service under measurement: the caller's environment (so
    `WORKER_MAX_JOBS=20 uv run python -m bench.jobs` measures that setting) with the
    database, Redis index, secret and storage of the benchmarks; `extra` overrides."""
    database = database or os.environ.get("BENCH_DATABASE_NAME", "app_bench")
    redis_db = redis_db or os.environ.get("BENCH_REDIS_DB", "14")
    server = make_url(os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL))
    redis = make_url(os.environ.get("REDIS_URL", DEFAULT_REDIS_URL))
    storage = Path(tempfile.gettempdir()) / f"{database}-storage"
    return {
        **os.environ,
        # So that `python -m bench.<script>` children import from the project.
        "PYTHONPATH": str(PROJECT_ROOT),
        "ENVIRONMENT": "test",
        "DATABASE_URL": server.set(database=database).render_as_string(hide_password=False),
        "REDIS_URL": redis.set(database=redis_db).render_as_string(hide_password=False),
        "JWT_SECRET": JWT_SECRET,
        "STORAGE_DIR": str(storage),
        "LOG_LEVEL": "WARNING",
        "MAIL_BACKEND": "console",
        **extra,
    }


@contextlib.contextmanager
def _environ(env: Mapping[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def settings_from(env: Mapping[str, str]) -> Settings:
    """The `Settings` a process started with `env` (and no `.env` file) would read."""
    with _environ(env):
        return Settings(
            _env_file=None,
            database=DatabaseSettings(_env_file=None),
            redis=RedisSettings(_env_file=None),
            auth=AuthSettings(_env_file=None),
            mail=MailSettings(_env_file=None),
            worker=WorkerProcessSettings(_env_file=None),
        )


async def fresh_database(settings: Settings) -> None:
    """Drop, create and migrate the bench database."""
    await recreate_database(settings.database.url)
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.attributes["database_url"] = settings.database.url
    config.attributes["configure_logger"] = False
    await asyncio.to_thread(command.upgrade, config, "head")


async def demo_token_and_items(
    settings: Settings, *, email: str = "demo-0@example.com", hours: int = 2
) -> tuple[str, list[UUID]]:
    """An access token of the seeded demo account `email`, and the ids of its items."""
    async with Resources.open(settings) as resources, resources.session() as session:
        user = await session.scalar(select(User).where(User.email == email))
        assert user is not None, f"{email} is not seeded"
        items = list(await session.scalars(select(Item.id).where(Item.owner_id == user.id)))
        token = resources.tokens.encode(
            TokenType.access,
            subject=str(user.id),
            jti=uuid7().hex,
            lifetime=timedelta(hours=hours),
            claims={"ver": user.token_version},
        ).token
    return token, items


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(signum: signal.Signals = signal.SIGTERM) -> Callable[[], None] | None:
    """On Linux, a `preexec_fn` that has the kernel send `signum` to the child when the
    thread that started it ends: a test run killed by `timeout` or Ctrl-C leaves no
    server behind. libc is loaded here, in the parent; the child only makes the call."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)

    def preexec() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signum)

    return preexec


def spawn(
    args: Sequence[str],
    env: Mapping[str, str],
    *,
    quiet: bool = True,
    log_to: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start `python -m app <args>` (or another module: `["-m", "bench.x"]`) in a scratch
    directory; its output goes nowhere (`quiet`), to ours, or to the file `log_to`. The
    process ends with ours (call this from the main thread: see `die_with_parent`)."""
    module = [] if args[0] == "-m" else ["-m", "app"]
    with contextlib.ExitStack() as files:
        output: int | IO[bytes] | None = subprocess.DEVNULL if quiet else None
        if log_to is not None:
            output = files.enter_context(log_to.open("ab"))
        return subprocess.Popen(  # noqa: S603 - our own interpreter
            [sys.executable, *module, *args],
            env=dict(env),
            cwd=tempfile.gettempdir(),
            stdout=output,
            stderr=output,
            preexec_fn=die_with_parent(),  # one async-signal-safe call in the child
        )


def stop(
    process: subprocess.Popen[bytes],
    *,
    grace: float = 30,
    signum: signal.Signals = signal.SIGTERM,
) -> int:
    """Send `signum` (SIGTERM), then wait up to `grace` seconds (SIGKILL after that);
    the exit code."""
    if process.poll() is None:
        process.send_signal(signum)
    try:
        return process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for_http(url: str, *, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            msg = f"{url} did not answer within {within} s"
            raise TimeoutError(msg)
        time.sleep(0.1)


def rss_mib(pid: int) -> float:
    """Resident memory of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    msg = f"no VmRSS for pid {pid}"
    raise RuntimeError(msg)


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (`fraction` in 0..1) of a non-empty sample."""
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def load_average() -> float:
    return os.getloadavg()[0]
