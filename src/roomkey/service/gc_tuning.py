"""Garbage-collector settings for a long-running roomkey process.

CPython runs its cyclic collector after every 700 net allocations of container objects. roomkey
allocates many short-lived, acyclic objects (rows, plans, JSON, pydantic models) and frees them
by reference counting, so most of those collections find nothing: in the scale benchmark they
were ~20 % of the CPU. :func:`tune_gc` raises the first-generation threshold (cycles are still
collected, just in fewer, larger passes) and, once start-up is done, :func:`freeze_startup_objects`
moves everything allocated so far (modules, config, app) out of the collector's sight so later
passes do not rescan it.

Both are process-wide, so only the process's owner calls them: ``roomkey serve`` and the
benchmarks that stand in for it. ``[service] gc_threshold`` = 0 keeps CPython's defaults.
"""

from __future__ import annotations

import gc

__all__ = ["DEFAULT_GC_THRESHOLD", "freeze_startup_objects", "tune_gc"]

DEFAULT_GC_THRESHOLD = 50_000
"""First-generation threshold roomkey runs with (CPython's default is 700)."""


def tune_gc(threshold: int = DEFAULT_GC_THRESHOLD) -> tuple[int, int, int]:
    """Set the first-generation threshold (0 or less: leave the defaults); returns the
    thresholds before, so a caller can restore them."""
    before = gc.get_threshold()
    if threshold > 0:
        gc.set_threshold(threshold, before[1], before[2])
    return before


def freeze_startup_objects() -> None:
    """Collect once, then exclude every object alive now from future collections."""
    gc.collect()
    gc.freeze()
