from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable

Condition = Callable[[], bool | Awaitable[bool]]


async def wait_until(condition: Condition, *, within: float = 10) -> None:
    """Poll `condition` (sync or async) until it holds: for effects that no event
    announces (log lines, rows or keys written by another task or process)."""
    async with asyncio.timeout(within):
        while True:
            outcome = condition()
            if inspect.isawaitable(outcome):
                outcome = await outcome
            if outcome:
                return
            await asyncio.sleep(0.02)
