"""argon2 runs on threads of its own, below the event loop's priority (app.core.security)."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from app.core.config import Settings
from app.core.security import PasswordHasher


def _nice(thread: threading.Thread) -> int:
    assert thread.native_id is not None
    return os.getpriority(os.PRIO_PROCESS, thread.native_id)


@pytest.mark.skipif(sys.platform != "linux", reason="a nice value per thread is Linux's")
async def test_hashing_threads_yield_the_cpu_to_the_event_loop(settings: Settings) -> None:
    auth = settings.auth.model_copy(update={"argon2_thread_nice": 7, "argon2_max_threads": 2})
    hasher = PasswordHasher.from_settings(auth)
    loop_nice = _nice(threading.current_thread())
    others = set(threading.enumerate())  # the served app's hashing threads among them
    try:
        hashed = await hasher.hash("correct horse battery staple")
        assert await hasher.verify(hashed, "correct horse battery staple")
        assert not await hasher.verify(hashed, "wrong")
        hashing = [
            thread
            for thread in set(threading.enumerate()) - others
            if thread.name.startswith("argon2")
        ]
        assert 1 <= len(hashing) <= 2
        assert {_nice(thread) for thread in hashing} == {min(loop_nice + 7, 19)}
        assert _nice(threading.current_thread()) == loop_nice
    finally:
        hasher.close()
