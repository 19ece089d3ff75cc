"""Process-level tuning for a pipeline run."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

from leadflow import settings


RUN_THRESHOLDS = (200_000, 10, 1_000)  # gen0 allocations; gen1 and gen2 in collections of the younger
FULL_COLLECTION_EVERY = 10  # runs; the others collect only the young generations before the freeze

_runs_started = 0


@contextmanager
def frozen_heap() -> Iterator[None]:
    """Keep the garbage collector's full passes out of a run.

    A worker process holds about a million long-lived objects (Prefect, pydantic schemas, the
    clients), and a run keeps a few pages of leads alive: each full collection walked them all, 14
    passes of 0.1-0.2 s in a 10,000-lead backfill, 15% of its CPU. For the run, the objects alive
    at its start are frozen and full passes become rare; young cycles are still collected, after
    200,000 allocations, and the middle generation every 10 young collections (Python's defaults
    are 700 and 10). The earlier 10,000 (with the middle generation every 200) made 792 young
    collections and spent 7.3 s collecting in a 50k backfill; this makes 24 and spends 4.1 s, at the
    same peak RSS (benchmarks/README.md, "Seventh session"). Both are undone when the run ends.

    A full pass over the worker's heap before the freeze cost 0.2 s, the whole CPU of a 100-lead
    run; so a run collects only the young generations first, and every ``FULL_COLLECTION_EVERY``-th
    run of a process everything. What garbage the old generation holds meanwhile is frozen with the
    rest and waits for the next full pass, which a long-lived worker (``leadflow listen``, a served
    deployment) gets at least every ten runs.
    """
    global _runs_started
    if not settings.freeze_heap_during_runs() or gc.get_freeze_count():
        yield
        return
    thresholds = gc.get_threshold()
    _runs_started += 1
    gc.collect(2 if _runs_started % FULL_COLLECTION_EVERY == 0 else 1)
    gc.freeze()
    gc.set_threshold(*RUN_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()
