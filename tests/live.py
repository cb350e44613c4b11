"""The service as real processes (`python -m app serve|worker`) on the test database and
Redis index, for what only real connections show: WebSockets, SSE streams, fan-out
between processes, signals."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from app.core.config import Settings
from bench.common import bench_env, free_port, spawn, stop, wait_for_http


def live_env(settings: Settings, storage: Path, **extra: str) -> dict[str, str]:
    """The environment of a live process: the test database, Redis index and secret,
    cheap argon2 parameters (as in-process tests use); `extra` adds or overrides."""
    defaults = {
        "DATABASE_URL": settings.database.url,
        "REDIS_URL": settings.redis.url,
        "JWT_SECRET": settings.auth.jwt_secret.get_secret_value(),
        "ARGON2_TIME_COST": "1",
        "ARGON2_MEMORY_KIB": "1024",
        "STORAGE_DIR": str(storage),
        "RATE_LIMIT_PER_CALLER_PER_MINUTE": "100000",
        "RATE_LIMIT_ANONYMOUS_PER_MINUTE": "100000",
        "RATE_LIMIT_REGISTRATIONS_PER_HOUR": "100000",
        "RATE_LIMIT_RECOVERIES_PER_HOUR": "100000",
        # Stop at once on SIGTERM; tests of the drain set it.
        "SHUTDOWN_DRAIN_SECONDS": "0",
    }
    return bench_env(**(defaults | extra))


@dataclass
class LiveServer:
    process: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/api/v1/ws"

    def stop(self, *, grace: float = 30) -> int:
        return stop(self.process, grace=grace)


async def start_server(env: dict[str, str], *args: str, log_to: Path | None = None) -> LiveServer:
    port = free_port()
    process = spawn(["serve", "--port", str(port), *args], env, log_to=log_to)
    server = LiveServer(process, port)
    try:
        await asyncio.to_thread(wait_for_http, f"{server.url}/health/live")
    except TimeoutError:
        server.stop(grace=1)
        raise
    return server


@dataclass
class SseEvent:
    event: str | None = None
    id: str | None = None
    data: str | None = None
    retry: int | None = None
    comments: list[str] = field(default_factory=list)

    def json(self) -> Any:
        assert self.data is not None
        return json.loads(self.data)


async def sse_events(response: httpx.Response) -> AsyncIterator[SseEvent]:
    """Parse a `text/event-stream` body as it arrives."""
    current = SseEvent()
    async for line in response.aiter_lines():
        if line == "":
            if current != SseEvent():
                yield current
            current = SseEvent()
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "":
            current.comments.append(value)
        elif name == "data":
            current.data = value if current.data is None else f"{current.data}\n{value}"
        elif name == "retry":
            current.retry = int(value)
        elif name in ("event", "id"):
            setattr(current, name, value)
