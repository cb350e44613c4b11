"""The `app` command: serve, worker, migrate, create-superuser, seed, check, run."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from pydantic import SecretStr, TypeAdapter, ValidationError

from app.core.config import PROJECT_ROOT, Settings
from app.core.database_admin import (
    ServiceUnreachable,
    check_database_server,
    check_redis,
    ensure_database,
)
from app.users.schemas import Email, Password


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        errors = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'settings'}: {error['msg']}"
            for error in exc.errors()
        )
        _fail(f"invalid configuration: {errors}")


def _fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)  # noqa: T201
    raise SystemExit(1)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)  # noqa: T201


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def serve(args: argparse.Namespace) -> None:
    import uvicorn

    from app.core import serving

    settings = _settings()
    # uvicorn handles SIGTERM gracefully and then raises it again, which would end the
    # process "killed by SIGTERM" (143) after a clean shutdown: exit 0 instead.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    # uvicorn.run(), accepting a burst of connections at once (app.core.serving).
    config = uvicorn.Config(
        "app.main:app",
        host=args.host or settings.host,
        port=args.port or settings.port,
        workers=args.workers or settings.web_concurrency,
        reload=args.reload,
        loop="uvloop",
        http="httptools",
        log_config=None,
        # Requests are logged by the app (app.access: route template, status, user).
        access_log=False,
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        timeout_graceful_shutdown=settings.shutdown_grace_seconds,
        # WebSocket clients only send pings: a bigger message is refused (1009) before
        # it is buffered.
        ws_max_size=settings.realtime.max_message_bytes,
    )
    serving.run(config)


def worker(args: argparse.Namespace) -> None:
    import uvloop

    from app.core.logging import configure_logging
    from app.worker import create_worker

    settings = _settings()
    if args.check:
        _check_worker(settings)
        return
    configure_logging(settings.log_level, settings.resolved_log_format)
    asyncio.set_event_loop(uvloop.new_event_loop())
    create_worker(settings).run()


def _check_worker(settings: Settings) -> None:
    """Exit 0 when a worker refreshed its health key recently (a container health check)."""
    from app.worker import health_record

    try:
        asyncio.run(check_redis(settings.redis.url))
    except ServiceUnreachable as exc:
        _fail(str(exc))
    record = asyncio.run(health_record(settings))
    if record is None:
        _fail(f"worker {settings.worker.name!r} has not recorded its health in the last 31 seconds")
    _say(f"worker healthy: {record}")


def _alembic_config_path() -> Path:
    configured = os.environ.get("ALEMBIC_CONFIG")
    for candidate in (configured, Path.cwd() / "alembic.ini", PROJECT_ROOT / "alembic.ini"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    _fail("alembic.ini not found; run from the project directory or set ALEMBIC_CONFIG")


def _preflight(settings: Settings) -> None:
    try:
        asyncio.run(check_database_server(settings.database.url))
        asyncio.run(check_redis(settings.redis.url))
    except ServiceUnreachable as exc:
        _fail(str(exc))


def migrate(_: argparse.Namespace) -> None:
    from alembic import command
    from alembic.config import Config

    settings = _settings()
    try:
        created = asyncio.run(ensure_database(settings.database.url))
    except ServiceUnreachable as exc:
        _fail(str(exc))
    if created:
        _say(f"created database {created}")
    config = Config(str(_alembic_config_path()))
    config.attributes["database_url"] = settings.database.url
    command.upgrade(config, "head")
    _say("database is at the latest migration")


def create_superuser(args: argparse.Namespace) -> None:
    from app.bootstrap import ensure_superuser

    settings = _settings()
    if args.if_configured and not (
        settings.first_superuser_email and settings.first_superuser_password
    ):
        _say("FIRST_SUPERUSER_EMAIL/FIRST_SUPERUSER_PASSWORD not set: no superuser to create")
        return
    email = args.email or settings.first_superuser_email or input("email: ")
    secret = settings.first_superuser_password
    password = secret.get_secret_value() if secret else getpass.getpass("password: ")
    try:
        email = TypeAdapter(Email).validate_python(email)
        TypeAdapter(Password).validate_python(password)
    except ValidationError as exc:
        _fail("; ".join(error["msg"] for error in exc.errors()))
    outcome = asyncio.run(
        ensure_superuser(settings, email=email, password=SecretStr(password), promote=args.promote)
    )
    _say(f"superuser {email}: {outcome}")


def seed(args: argparse.Namespace) -> None:
    from app.bootstrap import seed_demo_data

    settings = _settings()
    show = _progress_bar("seeding users") if args.users >= 50 else None
    created = asyncio.run(
        seed_demo_data(settings, users=args.users, items_per_user=args.items, progress=show)
    )
    _say(
        f"seeded {created} new users with {args.items} items each "
        "(emails demo-<n>@example.com, password demo-password-1)"
    )


def _progress_bar(label: str, width: int = 30) -> Callable[[int, int], None]:
    def show(done: int, total: int) -> None:
        filled = width * done // max(total, 1)
        bar = "#" * filled + "-" * (width - filled)
        end = "\n" if done >= total else ""
        print(f"\r{label} [{bar}] {done}/{total}", end=end, file=sys.stderr, flush=True)  # noqa: T201

    return show


def check(_: argparse.Namespace) -> None:
    settings = _settings()
    _preflight(settings)
    _say("PostgreSQL and Redis are reachable")


def run(args: argparse.Namespace) -> None:
    """What `make run` does: check, migrate, bootstrap, then the API and the worker."""
    settings = _settings()
    _preflight(settings)
    migrate(args)
    create_superuser(argparse.Namespace(email=None, if_configured=True, promote=False))
    _say(f"serving on http://{settings.host}:{settings.port} (docs at /docs); Ctrl-C stops")
    app_command = [sys.executable, "-m", "app"]
    children = [
        subprocess.Popen([*app_command, "worker"]),  # noqa: S603 - our own interpreter
        subprocess.Popen([*app_command, "serve"]),  # noqa: S603
    ]
    code = _supervise(children)
    raise SystemExit(code)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _supervise(children: Sequence[subprocess.Popen[bytes]]) -> int:
    """Wait until one child exits or we are interrupted, then stop them all."""
    signal.signal(signal.SIGTERM, _interrupt)
    code = 0
    try:
        while all(child.poll() is None for child in children):
            time.sleep(0.2)
        code = next(child.returncode for child in children if child.returncode is not None)
    except KeyboardInterrupt:
        pass
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGINT)
    deadline = time.monotonic() + 35
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="app", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve_parser = commands.add_parser("serve", help="serve the API with uvicorn")
    serve_parser.add_argument("--host")
    serve_parser.add_argument("--port", type=int)
    serve_parser.add_argument("--workers", type=int, help="uvicorn processes (WEB_CONCURRENCY)")
    serve_parser.add_argument("--reload", action="store_true", help="restart on code changes")
    serve_parser.set_defaults(handler=serve)

    worker_parser = commands.add_parser("worker", help="run the ARQ worker")
    worker_parser.add_argument(
        "--check", action="store_true", help="exit 0 if a worker recorded its health recently"
    )
    worker_parser.set_defaults(handler=worker)
    commands.add_parser(
        "migrate", help="create the database if needed and apply every migration"
    ).set_defaults(handler=migrate)

    superuser_parser = commands.add_parser(
        "create-superuser", help="create (or promote) an admin account"
    )
    superuser_parser.add_argument("--email", help="default: FIRST_SUPERUSER_EMAIL")
    superuser_parser.add_argument(
        "--if-configured",
        action="store_true",
        help="do nothing unless FIRST_SUPERUSER_EMAIL and FIRST_SUPERUSER_PASSWORD are set",
    )
    superuser_parser.add_argument(
        "--promote",
        action="store_true",
        help="make an existing account with this email an admin (by default it is left alone)",
    )
    superuser_parser.set_defaults(handler=create_superuser)

    seed_parser = commands.add_parser("seed", help="add demo users with items")
    seed_parser.add_argument("--users", type=int, default=10)
    seed_parser.add_argument("--items", type=int, default=20, help="items per user")
    seed_parser.set_defaults(handler=seed)

    commands.add_parser("check", help="check that PostgreSQL and Redis are reachable").set_defaults(
        handler=check
    )
    commands.add_parser(
        "run", help="check, migrate, create the first superuser, serve API + worker"
    ).set_defaults(handler=run)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    args.handler(args)
