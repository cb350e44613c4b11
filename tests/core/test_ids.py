from __future__ import annotations

import time

from app.core.ids import uuid7


def test_ids_are_version_7_and_carry_the_time() -> None:
    before = time.time_ns() // 1_000_000
    made = uuid7()
    after = time.time_ns() // 1_000_000
    assert made.version == 7
    assert made.variant == "specified in RFC 4122"
    assert before <= made.int >> 80 <= after + 1


def test_ids_made_within_one_millisecond_still_increase() -> None:
    made = [uuid7() for _ in range(20_000)]  # thousands share a millisecond
    assert made == sorted(made)
    assert len(set(made)) == len(made)
