"""Private PostgreSQL and Redis servers that the fault tests crash and restart, and the
light load they keep up meanwhile.

Each server is a child of the test run, listening on a free port of 127.0.0.1 only, with
its data in a temporary directory: the machine's shared servers (5432, 6379) are never
touched, whatever happens to these.

- PostgreSQL (`PG_BIN`, default /usr/lib/postgresql/15/bin) runs as the `postgres` OS
  user when the tests run as root (it refuses to run as root), with trust auth and no
  durability it does not need (`fsync=off`). `initdb` and the Alembic migrations run
  once per session into a template data directory; each test starts its own copy.
  `crash()` is what `pg_ctl stop -m immediate` does (SIGQUIT to the postmaster: every
  backend dies at once, no checkpoint, crash recovery on the next start); `start()`
  brings it back on the same port.
  `freeze()` stops every process of the server (SIGSTOP) without closing anything,
  `thaw()` lets them go on.
- Redis persists every write before answering it (`appendonly yes`, `appendfsync
  always`, no RDB snapshots), as the Redis that holds a job queue should: `crash()` is
  SIGKILL, and `start()` on the same port and directory replays the append-only file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.core.config import Settings
from app.core.database_admin import ensure_database
from bench.common import die_with_parent, free_port, stop
from tests.conftest import migrate
from tests.factories import Account, create_account, create_item
from tests.live import live_env, start_server

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
REDIS_SERVER = shutil.which("redis-server")
DATABASE = "app"


def _require(binary: Path | str | None, what: str) -> None:
    if binary is None or not Path(binary).exists():  # pragma: no cover
        pytest.skip(f"the fault tests need {what}")


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _end(process: subprocess.Popen[bytes] | None, signum: signal.Signals, grace: float) -> None:
    if process is not None:
        stop(process, grace=grace, signum=signum)


SCRATCH_PREFIX = "faults-"
_OWNER_FILE = "owner.pid"


def _scratch_dir(prefix: str) -> Path:
    """A temporary directory marked with our pid. The fixtures remove theirs when they
    end; a run killed outright (SIGKILL, `timeout`) cannot, so each session first
    removes those whose run is gone (its servers died with it: `die_with_parent`)."""
    path = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX + prefix))
    (path / _OWNER_FILE).write_text(str(os.getpid()))
    return path


def _remove_abandoned_scratch_dirs() -> None:
    for path in Path(tempfile.gettempdir()).glob(SCRATCH_PREFIX + "*"):
        try:
            owner = int((path / _OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        if owner != os.getpid() and not Path(f"/proc/{owner}").exists():
            shutil.rmtree(path, ignore_errors=True)


class _PostgresUser:
    """Whom PostgreSQL runs as: `postgres` when we are root, else ourselves."""

    def __init__(self) -> None:
        self.as_root = os.geteuid() == 0
        self.name = "postgres" if self.as_root else pwd.getpwuid(os.geteuid()).pw_name
        entry = pwd.getpwnam(self.name)
        self.uid, self.gid = entry.pw_uid, entry.pw_gid

    def popen_options(self) -> dict[str, Any]:
        if not self.as_root:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    def make_dir(self, prefix: str) -> Path:
        """A fresh directory under the system temp dir (which every user can traverse,
        unlike pytest's) that this user owns."""
        path = _scratch_dir(prefix)
        os.chown(path, self.uid, self.gid)
        return path

    def run(self, *args: str | Path) -> None:
        done = subprocess.run(  # noqa: S603 - PostgreSQL's own tools, fixed arguments
            [str(arg) for arg in args],
            check=False,
            capture_output=True,
            text=True,
            cwd="/",
            **self.popen_options(),
        )
        if done.returncode != 0:
            msg = f"{' '.join(map(str, args))} exited with {done.returncode}: {done.stderr}"
            raise RuntimeError(msg)


class PrivatePostgres:
    """One PostgreSQL server on `port` with its data in `data_dir`."""

    SETTINGS = {
        "listen_addresses": "127.0.0.1",
        "unix_socket_directories": "",
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "max_connections": "60",
        "shared_buffers": "16MB",
        "log_min_messages": "warning",
        # Only matters while the server is held in recovery (see `start`).
        "hot_standby": "off",
    }

    def __init__(self, user: _PostgresUser, data_dir: Path, port: int, log: Path) -> None:
        self.user = user
        self.data_dir = data_dir
        self.port = port
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{DATABASE}"

    def start(self, *, held_in_recovery: bool = False) -> None:
        """Start on the same port. `held_in_recovery`: start as a standby with nothing
        to follow and hot standby off, so that, like a server replaying a long crash
        recovery, it listens but answers every connection with SQLSTATE 57P03 ("the
        database system is not accepting connections") until `promote()`."""
        assert self.process is None or self.process.poll() is not None, "already running"
        if held_in_recovery:
            signal_file = self.data_dir / "standby.signal"
            signal_file.touch()
            os.chown(signal_file, self.user.uid, self.user.gid)
        settings = [f"--{name}={value}" for name, value in self.SETTINGS.items()]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 - PostgreSQL's own server
                [
                    str(PG_BIN / "postgres"),
                    "-D",
                    str(self.data_dir),
                    "-p",
                    str(self.port),
                    *settings,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd="/",
                preexec_fn=die_with_parent(signal.SIGQUIT),
                **self.user.popen_options(),
            )

    async def wait_ready(self, *, within: float = 30) -> None:
        deadline = time.monotonic() + within
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                msg = f"PostgreSQL exited with {self.process.returncode}:\n{_tail(self.log)}"
                raise RuntimeError(msg)
            try:
                connection = await asyncpg.connect(
                    host="127.0.0.1",
                    port=self.port,
                    user="postgres",
                    database="postgres",
                    timeout=1,
                )
            except (OSError, asyncpg.PostgresError, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)
            else:
                await connection.close()
                return

    def promote(self) -> None:
        """End the recovery `start(held_in_recovery=True)` began; returns once the
        server accepts connections."""
        self.user.run(PG_BIN / "pg_ctl", "promote", "--wait", "-D", self.data_dir)

    def crash(self) -> None:
        """`pg_ctl stop -m immediate`: SIGQUIT to the postmaster, which ends every
        backend at once (their clients lose their connections) and exits without a
        checkpoint; returns once the postmaster is gone and the port is free."""
        _end(self.process, signal.SIGQUIT, grace=10)

    def stop(self) -> None:
        self.thaw()  # a stopped server would never see the signal
        _end(self.process, signal.SIGINT, grace=10)  # fast shutdown

    def freeze(self) -> None:
        """SIGSTOP to the postmaster and every backend: the server hangs without a word,
        as it does on a frozen VM, a full disk stall or a network partition. Its open
        connections stay open and get no answer; the kernel still accepts new ones into
        the listen backlog, where they wait for a startup reply that does not come."""
        for pid in self._pids():
            os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT to every process `freeze()` stopped: the server carries on."""
        for pid in self._pids():
            os.kill(pid, signal.SIGCONT)

    def _pids(self) -> list[int]:
        """The postmaster and its children (backends and auxiliary processes)."""
        if self.process is None or self.process.poll() is not None:
            return []
        postmaster = self.process.pid
        children = Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text().split()
        return [postmaster, *map(int, children)]


class PrivateRedis:
    """One Redis server on `port`, persisting every write to an append-only file in
    `directory`."""

    def __init__(self, directory: Path, port: int, log: Path) -> None:
        self.directory = directory
        self.port = port
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert REDIS_SERVER is not None
        assert self.process is None or self.process.poll() is not None, "already running"
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 - redis-server, fixed arguments
                [
                    REDIS_SERVER,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--dir",
                    str(self.directory),
                    "--save",
                    "",
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "always",
                    "--daemonize",
                    "no",
                    "--loglevel",
                    "warning",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                preexec_fn=die_with_parent(signal.SIGKILL),
            )

    async def wait_ready(self, *, within: float = 10) -> None:
        deadline = time.monotonic() + within
        client = Redis(host="127.0.0.1", port=self.port, socket_timeout=1)
        try:
            while True:
                assert self.process is not None
                if self.process.poll() is not None:
                    msg = f"redis-server exited with {self.process.returncode}:\n{_tail(self.log)}"
                    raise RuntimeError(msg)
                try:
                    await client.ping()
                except (RedisError, OSError):  # refused, or still loading its data
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.02)
                else:
                    return
        finally:
            await client.aclose()

    def crash(self) -> None:
        """SIGKILL: no shutdown of any kind; what was acknowledged is in the AOF."""
        _end(self.process, signal.SIGKILL, grace=10)

    def stop(self) -> None:
        _end(self.process, signal.SIGTERM, grace=10)


@pytest.fixture(scope="session", autouse=True)
def _no_abandoned_scratch_dirs() -> None:
    if sys.platform.startswith("linux"):  # where /proc tells whether a run is gone
        _remove_abandoned_scratch_dirs()


@pytest.fixture(scope="session")
def postgres_user() -> _PostgresUser:
    return _PostgresUser()


@pytest_asyncio.fixture(scope="session")
async def postgres_template(postgres_user: _PostgresUser) -> AsyncIterator[Path]:
    """A data directory, initialised and migrated once per session, to copy from."""
    _require(PG_BIN / "postgres", f"PostgreSQL's binaries in {PG_BIN} (set PG_BIN)")
    base = postgres_user.make_dir("pg-template-")
    data = base / "data"
    try:
        postgres_user.run(
            PG_BIN / "initdb",
            "-D",
            data,
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
            "--no-instructions",
        )
        server = PrivatePostgres(postgres_user, data, free_port(), base / "template.log")
        server.start()
        try:
            await server.wait_ready()
            await ensure_database(server.url)
            # Alembic's env.py runs its own event loop, so it gets a thread of its own.
            await asyncio.to_thread(migrate, server.url)
        finally:
            server.stop()
        yield data
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest_asyncio.fixture
async def postgres(
    postgres_user: _PostgresUser, postgres_template: Path
) -> AsyncIterator[PrivatePostgres]:
    """A running private PostgreSQL with the migrated database `app`, this test's own."""
    base = postgres_user.make_dir("pg-")
    data = base / "data"
    try:
        await asyncio.to_thread(postgres_user.run, "cp", "-a", postgres_template, data)
        server = PrivatePostgres(postgres_user, data, free_port(), base / "postgres.log")
        server.start()
        try:
            await server.wait_ready()
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest_asyncio.fixture
async def redis_server() -> AsyncIterator[PrivateRedis]:
    """A running private Redis with an empty, persisted dataset, this test's own."""
    _require(REDIS_SERVER, "redis-server on PATH")
    directory = _scratch_dir("redis-")
    server = PrivateRedis(directory, free_port(), directory / "redis.log")
    try:
        server.start()
        await server.wait_ready()
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


# The light load: a round of requests every `every` seconds, each on its own task.

Probe = Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]


@dataclass(frozen=True)
class Sample:
    """One request of the load: when it was sent and answered, and how."""

    probe: str
    started: float  # time.monotonic()
    ended: float
    status: int | None  # None: no answer within the client's timeout, or a broken connection
    error: str | None = None
    content_type: str = ""
    problem_type: str | None = None
    retry_after: str | None = None
    idempotency_key: str | None = None

    @property
    def seconds(self) -> float:
        return self.ended - self.started

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def is_problem_503(self) -> bool:
        return (
            self.status == 503
            and self.content_type.startswith("application/problem+json")
            and self.problem_type == "urn:problem:service-unavailable"
            and self.retry_after is not None
        )

    def __str__(self) -> str:
        outcome = self.status if self.status is not None else self.error
        return f"{self.probe} -> {outcome} in {self.seconds:.2f} s"


@dataclass
class Load:
    """Sends every probe each `every` seconds until stopped, without waiting for the
    previous answers (a slow one never holds the load back), and records every answer;
    a request gets `timeout` seconds, past which it is recorded as unanswered."""

    url: str
    probes: Mapping[str, Probe]
    every: float = 0.3
    timeout: float = 6.0
    samples: list[Sample] = field(default_factory=list)
    _tasks: set[asyncio.Task[Sample]] = field(default_factory=set)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _loop: asyncio.Task[None] | None = None
    _client: httpx.AsyncClient | None = None
    _quiet: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    async def __aenter__(self) -> Load:
        # httpx logs every request at INFO: hundreds of lines in a failure's report.
        self._quiet.enter_context(_log_level("httpx", logging.WARNING))
        self._client = httpx.AsyncClient(base_url=self.url, timeout=self.timeout)
        self._loop = asyncio.create_task(self._run())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._loop is not None:
            await self._loop
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
        self._quiet.close()

    async def _run(self) -> None:
        while not self._stop.is_set():
            for name, probe in self.probes.items():
                task = asyncio.create_task(self._send(name, probe))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.every)

    async def follow(self, name: str, probe: Probe, *, within: float) -> None:
        """Send `probe` again and again, one request at a time, until it answers 2xx or
        `within` seconds passed, recording each answer as `name`: the close look at a
        restart that the rounds, a third of a second apart, may step over."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if (await self._send(name, probe)).ok:
                return
            await asyncio.sleep(0.01)

    async def _send(self, name: str, probe: Probe) -> Sample:
        assert self._client is not None
        started = time.monotonic()
        try:
            response = await probe(self._client)
        except httpx.HTTPError as exc:
            sample = Sample(name, started, time.monotonic(), None, type(exc).__name__)
        else:
            content_type = response.headers.get("content-type", "")
            problem_type = None
            if content_type.startswith("application/problem+json"):
                problem_type = response.json().get("type")
            sample = Sample(
                name,
                started,
                time.monotonic(),
                response.status_code,
                content_type=content_type,
                problem_type=problem_type,
                retry_after=response.headers.get("retry-after"),
                idempotency_key=response.request.headers.get("idempotency-key"),
            )
        self.samples.append(sample)
        return sample

    def of(
        self, *probes: str, sent_after: float = 0, sent_before: float = float("inf")
    ) -> list[Sample]:
        """The answers to `probes` (every one when none is named) whose requests were
        sent within the interval, in the order they were sent."""
        return sorted(
            (
                sample
                for sample in self.samples
                if (not probes or sample.probe in probes)
                and sent_after <= sample.started < sent_before
            ),
            key=lambda sample: sample.started,
        )

    async def wait_until_healthy(
        self, *, since: float, streak: int = 3, within: float = 15
    ) -> None:
        """Until each probe's last `streak` answers to requests sent after `since` are
        2xx, or `within` seconds (the assertions on the samples then say what is wrong)."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            recent = [self.of(name, sent_after=since)[-streak:] for name in self.probes]
            if all(len(last) == streak and all(s.ok for s in last) for last in recent):
                return
            await asyncio.sleep(0.1)

    def counts(
        self, *, sent_after: float = 0, sent_before: float = float("inf")
    ) -> dict[str, dict[str, int]]:
        """How many answers of each status every probe got, for the report."""
        table: dict[str, Counter[str]] = {}
        for sample in self.of(sent_after=sent_after, sent_before=sent_before):
            outcome = str(sample.status) if sample.status is not None else str(sample.error)
            table.setdefault(sample.probe, Counter())[outcome] += 1
        return {name: dict(sorted(counter.items())) for name, counter in table.items()}


@contextlib.contextmanager
def _log_level(name: str, level: int) -> Iterator[None]:
    logger = logging.getLogger(name)
    saved = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(saved)


def idempotency_key() -> dict[str, str]:
    return {"Idempotency-Key": str(uuid.uuid4())}


@contextlib.contextmanager
def logs_on_failure(*logs: Path) -> Iterator[None]:
    """Add the tail of each log to an assertion that fails inside the block."""
    try:
        yield
    except AssertionError as exc:
        tails = "\n".join(f"--- {log.name} ---\n{_tail(log, 40)}" for log in logs)
        raise AssertionError(f"{exc}\n{tails}") from exc


def report(title: str, **figures: object) -> None:
    """Print what a fault test measured (seen with `pytest -s`)."""

    def shown(value: object) -> object:
        if isinstance(value, float):
            return f"{value:.3f} s"
        if isinstance(value, dict):
            return {key: shown(item) for key, item in value.items()}
        return value

    lines = [f"\n{title}:"] + [f"  {name}: {shown(value)}" for name, value in figures.items()]
    print("\n".join(lines))  # noqa: T201


def private_env(
    settings: Settings, postgres: PrivatePostgres, redis: PrivateRedis, tmp_path: Path
) -> dict[str, str]:
    """The environment of a live process on the private servers."""
    return live_env(
        settings,
        tmp_path / "storage",
        DATABASE_URL=postgres.url,
        REDIS_URL=redis.url,
        LOG_LEVEL="INFO",
    )


def seconds_to_first_503(samples: list[Sample], since: float) -> float:
    answered = [sample.ended for sample in samples if sample.status == 503]
    assert answered, f"no 503 among {[str(sample) for sample in samples]}"
    return min(answered) - since


# What every fault test drives and checks: a live API with an account and an item, the
# light load on it, and what must hold of the answers around an outage.

API = "/api/v1"
NEW_ITEM = {"title": "Lamp", "price": "3.00"}
READY_WITHIN = 2.0  # readiness answers 503 within this, and every answer takes less
ROUTES_WITHIN = 3.0  # the routes that need the server: a 503 problem within this
RECOVERY_WITHIN = 5.0  # every probe 2xx again within this of the restart
OUTAGE_SECONDS = 4.0  # how long a crashed server stays down


@dataclass(frozen=True)
class Serving:
    url: str
    client: httpx.AsyncClient
    account: Account
    item: dict[str, Any]


@contextlib.asynccontextmanager
async def serving(env: dict[str, str], server_log: Path) -> AsyncIterator[Serving]:
    """A live API process on the private servers, an account and one item (read once,
    so it is cached); stopped at the end."""
    server = await start_server(env, log_to=server_log)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            account = await create_account(client)
            item = await create_item(client, account)
            read = await client.get(f"{API}/items/{item['id']}", headers=account.headers)
            assert read.status_code == 200
            yield Serving(server.url, client, account, item)
    finally:
        server.stop(grace=5)


def light_load(account: Account, item: dict[str, Any]) -> dict[str, Probe]:
    """Liveness, readiness, a page of items, a create with an `Idempotency-Key`, a read
    of a cached item."""

    def create(http: httpx.AsyncClient) -> Awaitable[httpx.Response]:
        headers = account.headers | idempotency_key()
        return http.post(f"{API}/items", json=NEW_ITEM, headers=headers)

    return {
        "live": lambda http: http.get("/health/live"),
        "ready": lambda http: http.get("/health/ready"),
        "list": lambda http: http.get(f"{API}/items", headers=account.headers),
        "create": create,
        "read": lambda http: http.get(f"{API}/items/{item['id']}", headers=account.headers),
    }


def assert_outage_answers(
    load: Load,
    *,
    began: float,
    ended: float,
    allowed: Mapping[str, set[int]],
    routes: tuple[str, ...],
    quick: tuple[str, ...],
    timed: tuple[str, ...] = (),
) -> tuple[float, dict[str, float]]:
    """What must hold of every answer around an outage from `began` to `ended`: only
    `allowed` statuses; readiness always under READY_WITHIN, the `routes` (and `timed`
    probes) under ROUTES_WITHIN, the `quick` ones under 1 s; readiness 503 within
    READY_WITHIN and each of `routes` a 503 problem within ROUTES_WITHIN, and from then
    on until the outage ended. Returns those delays."""
    every = load.of()
    assert every, "the load sent nothing"
    for sample in every:
        assert sample.status in allowed[sample.probe], f"unexpected answer: {sample}"
    for sample in load.of("ready"):
        assert sample.seconds < READY_WITHIN, f"readiness too slow: {sample}"
    for sample in load.of(*routes, *timed):
        assert sample.seconds < ROUTES_WITHIN, f"too slow: {sample}"
    for sample in load.of(*quick):
        assert sample.seconds < 1, f"too slow: {sample}"

    # Readiness: 503 within 2 s, and from then on until the outage ended.
    outage_ready = load.of("ready", sent_after=began, sent_before=ended)
    ready_after = seconds_to_first_503(outage_ready, began)
    assert ready_after <= READY_WITHIN
    # (A request sent during the outage may be answered after it, successfully.)
    late = [s for s in outage_ready if began + READY_WITHIN < s.ended < ended]
    assert late
    assert all(s.status == 503 for s in late), [str(s) for s in late]

    # The routes: a 503 problem within 3 s, and from then on.
    routes_after = {}
    for name in routes:
        outage = load.of(name, sent_after=began, sent_before=ended)
        routes_after[name] = seconds_to_first_503(outage, began)
        assert routes_after[name] <= ROUTES_WITHIN, name
        late = [s for s in outage if began + ROUTES_WITHIN < s.ended < ended]
        assert late
        assert all(s.is_problem_503 for s in late), [str(s) for s in late]
    assert all(s.is_problem_503 for s in load.of(*routes, *timed) if s.status == 503)
    return ready_after, routes_after


def recovered_since(load: Load, since: float) -> float:
    """The moment after which every request sent got a 2xx, each probe at least one."""
    after = load.of(sent_after=since)
    recovered = max((s.ended for s in after if not s.ok), default=since)
    for name in load.probes:
        assert any(s.ok for s in load.of(name, sent_after=recovered)), name
    return recovered
