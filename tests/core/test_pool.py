"""The pool's queue hands connections out first come, first served (app.core.pool)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.util import greenlet_spawn
from sqlalchemy.util.queue import Empty

from app.core.pool import FairQueue


def _get(queue: FairQueue[str], timeout: float = 5) -> asyncio.Task[str]:
    """A checkout, as the pool makes it: from a greenlet, waiting up to `timeout`."""
    return asyncio.create_task(greenlet_spawn(queue.get, True, timeout))


async def test_a_returned_connection_goes_to_the_longest_waiting_request() -> None:
    queue: FairQueue[str] = FairQueue(maxsize=2)
    first = _get(queue)
    await asyncio.sleep(0.01)  # waiting: nothing is idle
    # A newcomer is about to run when the connection comes back, before `first` resumes:
    # the stock asyncio queue lets it take the connection, and `first` waits again.
    newcomer = _get(queue)
    queue.put_nowait("connection")
    assert await first == "connection"
    await asyncio.sleep(0.01)
    assert not newcomer.done()
    queue.put_nowait("connection")
    assert await newcomer == "connection"


async def test_waiters_are_served_in_order_and_give_up_after_their_timeout() -> None:
    queue: FairQueue[str] = FairQueue(maxsize=2)
    waiters = []
    for _ in range(3):
        waiters.append(_get(queue))
        await asyncio.sleep(0.01)
    late = _get(queue, timeout=0.05)
    for name in ("a", "b", "c"):
        queue.put_nowait(name)
    assert [await waiter for waiter in waiters] == ["a", "b", "c"]
    with pytest.raises(Empty):
        await late
    # Nothing was lost: a connection returned now is idle, for the next request.
    queue.put_nowait("d")
    assert await _get(queue) == "d"


async def test_a_connection_handed_to_a_request_that_gave_up_goes_to_the_next() -> None:
    queue: FairQueue[str] = FairQueue(maxsize=2)
    leaving = _get(queue)
    await asyncio.sleep(0.01)
    staying = _get(queue)
    await asyncio.sleep(0.01)
    queue.put_nowait("connection")  # handed to `leaving`, which is cancelled before it runs
    leaving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leaving
    assert await staying == "connection"
