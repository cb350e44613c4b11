"""The ARQ worker: every domain's `tasks.py`, built from the same `Resources` as the API.

Run it with `app worker` (or `make worker`). `create_worker(settings)` is also what the
tests use, with `burst=True`.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

from arq.worker import Function, Worker

from app.auth.tasks import FUNCTIONS as AUTH_FUNCTIONS
from app.core.config import Settings
from app.core.resources import Resources, arq_redis_settings

FUNCTIONS: list[Function] = [*AUTH_FUNCTIONS]


async def startup(ctx: dict[str, Any]) -> None:
    # A caller (a test) may hand in ready resources; otherwise open our own.
    if "resources" in ctx:
        return
    stack = AsyncExitStack()
    ctx["resources"] = await stack.enter_async_context(Resources.open(ctx["settings"]))
    ctx["exit_stack"] = stack


async def shutdown(ctx: dict[str, Any]) -> None:
    stack: AsyncExitStack | None = ctx.pop("exit_stack", None)
    if stack is not None:
        await stack.aclose()


class WorkerSettings:
    """The worker's fixed configuration; `create_worker` adds what comes from `Settings`."""

    functions = FUNCTIONS
    on_startup = startup
    on_shutdown = shutdown
    max_jobs = 10
    job_timeout = 60
    keep_result = 3600
    max_tries = 5
    # On SIGTERM, stop taking jobs and give running ones this long to finish.
    job_completion_wait = 30
    health_check_interval = 30


def create_worker(settings: Settings, **overrides: Any) -> Worker:
    options: dict[str, Any] = {
        name: value for name, value in vars(WorkerSettings).items() if not name.startswith("_")
    }
    options |= {"redis_settings": arq_redis_settings(settings), "ctx": {"settings": settings}}
    return Worker(**(options | overrides))
