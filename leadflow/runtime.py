"""Process-level tuning for a pipeline run."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

from leadflow import settings


RUN_THRESHOLDS = (10_000, 200, 1_000)  # gen0 allocations; gen1 and gen2 in collections of the younger


@contextmanager
def frozen_heap() -> Iterator[None]:
    """Keep the garbage collector's full passes out of a run.

    A worker process holds about a million long-lived objects (Prefect, pydantic schemas, the
    clients), and a run keeps a few pages of leads alive: each full collection walked them all, 14
    passes of 0.1-0.2 s in a 10,000-lead backfill, 15% of its CPU. For the run, the objects alive
    at its start are frozen and full passes become rare; young cycles are still collected, and
    the middle generation every 200 young collections (every 50, Python's default, cost 0.3 s
    of a 10k backfill). Both are undone when the run ends.

    Only the young generations are collected before the freeze: a full pass over the worker's
    heap cost 0.2 s at every run's start, and what garbage the old generation holds then is
    collected after the run, when it is unfrozen, as it would have been at the next full pass.
    """
    if not settings.freeze_heap_during_runs() or gc.get_freeze_count():
        yield
        return
    thresholds = gc.get_threshold()
    gc.collect(1)
    gc.freeze()
    gc.set_threshold(*RUN_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()
