"""state/fences.py on SQLite and PostgreSQL: unique increasing stamps, open/closed fences, expiry."""

from __future__ import annotations

from datetime import timedelta

from state import fences
from state.schema import make_engine


def test_fences_open_close_expire_and_the_marker_confirmation(database_url):
    engine = make_engine(database_url)
    first = fences.open_fence(engine, "hubspot", "contacts", 1_000)
    second = fences.open_fence(engine, "hubspot", "contacts", 1_000)  # same clock reading: the next stamp
    third = fences.open_fence(engine, "hubspot", "contacts", 900)  # a clock that went back: still later
    assert (first, second, third) == (1_000, 1_001, 1_002)
    assert fences.open_fence(engine, "salesforce", "contacts", 5) == 5  # per CRM
    fences.close_fence(engine, "hubspot", "contacts", second, 1_250)
    fences.drop_fence(engine, "hubspot", "contacts", third)
    assert fences.live_fences(engine, "hubspot", "contacts", 0) == [fences.Fence(1_000, None), fences.Fence(1_001, 1_250)]
    assert fences.expire_fences(engine, "hubspot", "contacts", 1_001) == 1
    assert fences.live_fences(engine, "hubspot", "contacts", 0) == [fences.Fence(1_001, 1_250)]

    assert not fences.property_confirmed(engine, "hubspot", "contacts", "leadflow_synced_at", timedelta(days=1))
    fences.confirm_property(engine, "hubspot", "contacts", "leadflow_synced_at")
    assert fences.property_confirmed(engine, "hubspot", "contacts", "leadflow_synced_at", timedelta(days=1))
    fences.forget_property(engine, "hubspot", "contacts", "leadflow_synced_at")
    assert not fences.property_confirmed(engine, "hubspot", "contacts", "leadflow_synced_at", timedelta(days=1))
    engine.dispose()
