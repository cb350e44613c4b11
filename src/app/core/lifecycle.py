"""Say goodbye to long-lived connections before the server stops.

On SIGTERM (or Ctrl-C) uvicorn stops accepting connections, closes every open
WebSocket itself with code 1012, waits for HTTP responses to finish (an SSE stream never
does, so it waits out the whole graceful-shutdown timeout), and only then runs the
lifespan shutdown: too late to close anything cleanly.

So the lifespan chains a handler in front of uvicorn's for those signals: on the first
one it runs `drain` (WebSockets get 1001 "going away", SSE streams end) for at most
`within` seconds, and then hands the signal to uvicorn, whose graceful shutdown then
only has ordinary requests left to finish. A second signal goes straight to uvicorn (a
second Ctrl-C still forces the exit). Under a server that is not uvicorn nothing is
chained, and the lifespan shutdown closes what is still open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from types import FrameType
from typing import Any

import uvicorn

logger = logging.getLogger(__name__)

HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)

Handler = Callable[[int, FrameType | None], Any]


def _is_uvicorn_handler(handler: object) -> bool:
    # uvicorn's Server (or app.core.serving's) installs its bound handle_exit.
    owner = getattr(handler, "__self__", None)
    return isinstance(owner, uvicorn.Server)


class Shutdown:
    """Whether this process was told to stop: `/health/ready` answers 503 from then on,
    while the process still serves, so load balancers stop sending it requests."""

    def __init__(self) -> None:
        self.draining = False


@contextlib.asynccontextmanager
async def drain_on_shutdown_signal(
    drain: Callable[[], Awaitable[None]],
    *,
    within: float,
    shutdown: Shutdown | None = None,
    linger: float = 0,
) -> AsyncIterator[None]:
    """On the first SIGTERM or SIGINT: mark `shutdown` as draining and keep serving for
    `linger` seconds (the load balancer's time to notice), then `drain` long-lived
    connections for at most `within` seconds, then hand the signal to uvicorn, which
    stops accepting and lets the requests in flight finish."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    servers: dict[int, Handler] = {}
    for handled in HANDLED_SIGNALS:
        handler = signal.getsignal(handled)
        if _is_uvicorn_handler(handler):
            servers[handled] = handler  # type: ignore[assignment]
    if not servers:
        yield
        return

    loop = asyncio.get_running_loop()
    claimed = False
    tasks: set[asyncio.Task[None]] = set()

    async def drain_then_stop(signum: int) -> None:
        try:
            if shutdown is not None:
                shutdown.draining = True
            if linger > 0:
                logger.info("shutting down: not ready, serving for %.1f s more", linger)
                await asyncio.sleep(linger)
            async with asyncio.timeout(within):
                await drain()
        except Exception:
            logger.exception("draining connections failed")
        finally:
            servers[signum](signum, None)

    def start(signum: int) -> None:
        task = loop.create_task(drain_then_stop(signum))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        # A signal handler runs between two bytecodes of whatever the loop was doing:
        # it only hands the work to the loop.
        nonlocal claimed
        if claimed:
            servers[signum](signum, frame)
            return
        claimed = True
        loop.call_soon_threadsafe(start, signum)

    for chained in servers:
        signal.signal(chained, on_signal)
    try:
        yield
    finally:
        for chained, handler in servers.items():
            if signal.getsignal(chained) is on_signal:
                signal.signal(chained, handler)
