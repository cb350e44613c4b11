"""Time-ordered UUIDs (RFC 9562 version 7).

Primary keys are generated here rather than by PostgreSQL 15 (which has no uuidv7()):
they sort by creation time, which keeps B-tree inserts local and gives cursor
pagination a single, unique, stable sort key.
"""

from __future__ import annotations

import os
import time
from uuid import UUID


def uuid7() -> UUID:
    unix_ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    rand_a = rand >> 68  # 12 bits
    rand_b = rand & ((1 << 62) - 1)
    value = (unix_ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= rand_a << 64
    value |= 0b10 << 62
    value |= rand_b
    return UUID(int=value)
