"""CPython's cyclic garbage collector, set for a server that keeps many requests in flight.

Measured with `bench/http.py` (`GET /items/{id}`, one process, 64 then 256 connections,
45 s): with the interpreter's defaults the collector took 22 % of the CPU, and its 75
full collections stopped the event loop for 98 ms on average and up to 155 ms each,
which was most of the p99 tail. Two things made it so:

- A full collection walks every object in the process, and after startup there are
  130,000 of them that live as long as it does (modules, routes, pydantic validators,
  SQLAlchemy's mappers). `gc.freeze()` after startup moves them to a generation that
  collections skip: a full collection then walks what requests made, a few thousand
  objects.
- A young collection ran every 700 net container allocations: with hundreds of
  requests in flight, their objects outlived two of those and were promoted, so full
  collections came every 0.6 s. Nearly everything a request allocates is freed by
  reference counting when it ends; a threshold of 10,000 left 33 young collections in
  the same 45 s instead of 11,000, and one full collection.

Together: 0.3 s of collection instead of 9.9 s, and 29 % more `GET /items/{id}` per
second at 64 connections (`README.md`, Performance).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def tuned_collector(young_threshold: int) -> Iterator[None]:
    """While the server runs: what is alive now is frozen, and a young collection runs
    every `young_threshold` net allocations (0: leave the collector as it is). The
    previous settings come back on exit, and what was frozen is collectable again (a
    process that starts the application twice, the tests, does not keep the first)."""
    if young_threshold <= 0:
        yield
        return
    previous = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(young_threshold, *previous[1:])
    try:
        yield
    finally:
        gc.set_threshold(*previous)
        gc.unfreeze()
