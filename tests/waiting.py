from __future__ import annotations

import asyncio
from collections.abc import Callable


async def wait_until(condition: Callable[[], bool], *, within: float = 10) -> None:
    """Poll `condition` until it holds: for effects that no event announces (log lines,
    rows written by another task)."""
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110 - nothing to wait on but the condition
            await asyncio.sleep(0.02)
