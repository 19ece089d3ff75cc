"""``leadflow.runtime.frozen_heap``: the heap alive at a run's start is frozen for the run with the
run's collection thresholds, and both are undone at its end; LEADFLOW_GC_FREEZE=0 leaves the
collector alone (the test session runs its in-process pipelines so, tests/conftest.py)."""

from __future__ import annotations

import gc

import pytest

import leadflow.runtime as runtime
from leadflow.runtime import FULL_COLLECTION_EVERY, RUN_THRESHOLDS, frozen_heap


def test_a_run_freezes_the_heap_and_restores_the_collector_after(monkeypatch):
    monkeypatch.setenv("LEADFLOW_GC_FREEZE", "1")
    before = gc.get_threshold()
    assert gc.get_freeze_count() == 0
    with frozen_heap():
        assert gc.get_freeze_count() > 0 and gc.get_threshold() == RUN_THRESHOLDS
        with frozen_heap():  # a nested run (a flow calling another) leaves the outer freeze alone
            assert gc.get_threshold() == RUN_THRESHOLDS
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0 and gc.get_threshold() == before


def test_the_freeze_is_undone_when_the_run_fails(monkeypatch):
    monkeypatch.setenv("LEADFLOW_GC_FREEZE", "1")
    before = gc.get_threshold()
    with pytest.raises(RuntimeError), frozen_heap():
        raise RuntimeError("the run failed")
    assert gc.get_freeze_count() == 0 and gc.get_threshold() == before


@pytest.mark.parametrize("value", ["0", "off", "false", "no"])
def test_leadflow_gc_freeze_off_leaves_the_collector_alone(monkeypatch, value):
    monkeypatch.setenv("LEADFLOW_GC_FREEZE", value)
    before = gc.get_threshold()
    with frozen_heap():
        assert gc.get_freeze_count() == 0 and gc.get_threshold() == before


def test_every_tenth_run_collects_everything_first_the_others_the_young_generations(monkeypatch):
    monkeypatch.setenv("LEADFLOW_GC_FREEZE", "1")
    monkeypatch.setattr(runtime, "_runs_started", 0)
    generations: list[int] = []
    monkeypatch.setattr(runtime.gc, "collect", lambda generation=2: generations.append(generation) or 0)
    for _ in range(2 * FULL_COLLECTION_EVERY + 1):
        with frozen_heap():
            pass
    young = [1] * (FULL_COLLECTION_EVERY - 1)
    assert generations == young + [2] + young + [2, 1]
