"""Garbage-collector settings for the long-running processes (API replica, agent).

Python's cyclic collector runs every 700 net allocations by default and its full passes
walk every object alive, including the thousands created at start (modules, the ORM's
mappers, compiled statements) that never die. Under load that is ~10% of a replica's
CPU. Frozen start-up objects are never walked again, and a larger first generation
means fewer passes; reference counting still frees almost everything at once.
"""

from __future__ import annotations

import gc

FIRST_GENERATION_THRESHOLD = 20_000
"""Net allocations between young-generation collections (CPython's default: 700)."""


def tune_garbage_collection() -> None:
    """Freeze what start-up allocated and collect the young generation less often.

    Call once, when start-up is done.
    """
    gc.collect()  # garbage of start-up is freed, not frozen
    gc.freeze()
    _, second, third = gc.get_threshold()
    gc.set_threshold(FIRST_GENERATION_THRESHOLD, second, third)
