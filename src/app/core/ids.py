"""Time-ordered UUIDs (RFC 9562 version 7).

Primary keys are generated here rather than by PostgreSQL 15 (which has no uuidv7()):
they sort by creation time, which keeps B-tree inserts local and gives cursor
pagination a single, unique, stable sort key.

Within one process they are strictly increasing, also within a millisecond: the 12-bit
`rand_a` field is a counter there (RFC 9562 §6.2, method 1), started at a random value
below 2048 each millisecond, so rows made by one request (several files of one upload)
list in the order they were made.
"""

from __future__ import annotations

import os
import threading
import time
from uuid import UUID

_lock = threading.Lock()
_last_ms = 0
_counter = 0


def _next_position() -> tuple[int, int]:
    global _last_ms, _counter  # the generator's state, behind the lock
    with _lock:
        unix_ms = time.time_ns() // 1_000_000
        if unix_ms > _last_ms:
            _last_ms, _counter = unix_ms, int.from_bytes(os.urandom(2), "big") & 0x7FF
        else:  # the same millisecond (or the clock went back): count on
            _counter += 1
            if _counter > 0xFFF:
                _last_ms, _counter = _last_ms + 1, 0
        return _last_ms, _counter


def uuid7() -> UUID:
    unix_ms, counter = _next_position()
    rand_b = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (unix_ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= counter << 64
    value |= 0b10 << 62
    value |= rand_b
    return UUID(int=value)
