"""state.py on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from state import leads as state
from connectors.crm.base import FieldChange, LeadUpdate, Page, Quarantined, TaskSpec, WriteResult
from leadflow.canonical import Lead
from state.schema import make_engine

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.fixture()
def engine(database_url):
    eng = make_engine(database_url)
    yield eng
    eng.dispose()


def test_watermark_roundtrip_monotonic_and_lookback(engine):
    assert state.get_watermark(engine, "hubspot", "contacts") is None
    state.set_watermark(engine, "hubspot", "contacts", T0)
    state.set_watermark(engine, "hubspot", "contacts", T0 - timedelta(hours=1))  # never backwards
    assert state.get_watermark(engine, "hubspot", "contacts") == T0
    assert state.read_since(engine, "hubspot", "contacts", 300) == T0 - timedelta(seconds=300)
    state.set_watermark(engine, "hubspot", "contacts", T0 - timedelta(days=1), force=True)
    assert state.get_watermark(engine, "hubspot", "contacts") == T0 - timedelta(days=1)
    assert state.get_watermark(engine, "salesforce", "Lead") is None


def _update(crm_id: str, field: str, new) -> LeadUpdate:
    return LeadUpdate(crm_id, "lead", crm_id, {field: new}, [FieldChange(crm_id, "x", field, None, new)])


def test_written_values_bulk_upsert(engine):
    updates = [_update(str(i), "leadflow_stage", "mql") for i in range(1200)]
    assert state.record_written(engine, "hubspot", updates) == 1200
    state.record_written(engine, "hubspot", [_update("1", "leadflow_stage", "sql"), _update("2", "x", 3)],
                         succeeded=["1"])
    got = state.written_values(engine, "hubspot", [str(i) for i in range(1200)] + ["nope"])
    assert len(got) == 1200 and got["1"] == {"leadflow_stage": "sql"} and got["2"] == {"leadflow_stage": "mql"}
    assert state.written_values(engine, "salesforce", ["1"]) == {}


def test_pending_leads_roundtrip(engine):
    state.add_pending(engine, "salesforce", {"a": "salesforce:a: Lead_Score__c: bad", "b": "x"}, "write_failed")
    state.mark_pending(engine, "salesforce", {"a": "again"}, kind="write_failed")
    state.add_pending(engine, "salesforce", {"q": "quarantined"}, "quarantined")
    details = state.pending_details(engine, "salesforce")
    assert details["a"]["attempts"] == 2 and details["a"]["reason"] == "again"
    assert sorted(state.pending_ids(engine, "salesforce")) == ["a", "b", "q"]
    assert state.pending_ids(engine, "salesforce", kind="quarantined") == ["q"]
    state.clear_pending(engine, "salesforce", ["a", "q"])
    assert state.pending_ids(engine, "salesforce") == ["b"]


def test_task_keys_lifecycle(engine):
    specs = [TaskSpec(f"{i}:mql:call", str(i), "mql", "s", "b", T0.date(), "high") for i in range(3)]
    state.mark_tasks_pending(engine, "hubspot", specs)
    rows = state.task_key_rows(engine, "hubspot", [s.key for s in specs])
    assert {r["status"] for r in rows.values()} == {"pending"}
    assert state.created_task_keys(engine, "hubspot", [s.key for s in specs]) == set()
    state.mark_tasks_created(engine, "hubspot", {"0:mql:call": "T0", "1:mql:call": "T1"}, {"0:mql:call": "0"})
    state.forget_pending_tasks(engine, "hubspot", ["2:mql:call", "0:mql:call"])
    rows = state.task_key_rows(engine, "hubspot", [s.key for s in specs])
    assert set(rows) == {"0:mql:call", "1:mql:call"} and rows["1:mql:call"]["crm_id"] == "1"
    state.mark_tasks_closed(engine, "hubspot", ["0:mql:call"])
    assert state.created_task_keys(engine, "hubspot", [s.key for s in specs]) == {"0:mql:call", "1:mql:call"}
    assert state.task_key_rows(engine, "hubspot", ["0:mql:call"])["0:mql:call"]["status"] == "closed"


def test_seen_marks_trust_only_completed_runs(engine):
    stamps = {"a": T0, "b": T0, "c": T0}
    state.mark_seen(engine, "hubspot", stamps)                          # read marks of an unfinished run
    state.mark_seen(engine, "hubspot", {"c": T0 + timedelta(seconds=5)}, kind="echo")
    modified = {"a": T0, "b": T0 + timedelta(seconds=1), "c": T0 + timedelta(seconds=5), "d": T0}
    assert state.skippable(engine, "hubspot", "contacts", modified) == {"c"}  # echo only
    state.set_watermark(engine, "hubspot", "contacts", T0)             # the run completed
    assert state.skippable(engine, "hubspot", "contacts", modified) == {"a", "c"}  # b changed since


def test_commit_page(engine):
    lead = Lead(crm="hubspot", crm_id="1", modified_at=T0)
    bad = Lead(crm="hubspot", crm_id="2", modified_at=T0)
    page = Page(leads=[lead, bad], quarantined=[Quarantined("3", "hubspot:3: x: bad", "x")], cursor=T0)
    result = WriteResult(succeeded=["1"], failed={"2": "hubspot:2: leadflow_stage: invalid option"})
    mark = state.commit_page(engine, "hubspot", "contacts", page, [_update("1", "f", "v"), _update("2", "f", "w")], result)
    assert mark == T0
    assert state.written_values(engine, "hubspot", ["1", "2"]) == {"1": {"f": "v"}}
    assert sorted(state.pending_ids(engine, "hubspot")) == ["2", "3"]
