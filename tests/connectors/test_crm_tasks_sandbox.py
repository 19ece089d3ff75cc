"""Next-step tasks are never duplicated: reruns, crashes between create and state save, lost
responses after the CRM created the tasks."""

from __future__ import annotations

from collections import Counter

import pytest
from crm_harness import fast_retry
from crm_harness import run_sync, sandbox_state, seed_hubspot, seed_salesforce

from connectors import state
from connectors.base import TaskSpec
from connectors.factory import connector_for_sandbox
from connectors.setup import hubspot_setup


def _connector(sandbox, engine, crm):
    conn = connector_for_sandbox(sandbox, crm, engine, retry=fast_retry())
    if crm == "hubspot":
        hubspot_setup(conn)
        seed_hubspot(sandbox, 24)
    else:
        seed_salesforce(sandbox, 24)
    return conn


def _task_keys(sandbox, crm) -> Counter:
    st = sandbox_state(sandbox)
    if crm == "hubspot":
        rows = st.hubspot.tables["tasks"].records.values()
        return Counter(r.get("leadflow_task_key") for r in rows)
    return Counter(r.get("Leadflow_Task_Key__c") for r in st.salesforce.tables["Task"].records.values())


@pytest.mark.parametrize("crm", ["hubspot", "salesforce"])
def test_reruns_and_crash_after_create_make_no_duplicates(sandbox, engine, crm):
    conn = _connector(sandbox, engine, crm)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_sync(conn, engine, crash_after_tasks=True)  # tasks created, no watermark, nothing recorded
    created = _task_keys(sandbox, crm)
    assert created and max(created.values()) == 1
    run_sync(conn, engine)
    run_sync(conn, engine, incremental=False)  # a full rerun re-plans every lead
    keys = _task_keys(sandbox, crm)
    assert keys == created


@pytest.mark.parametrize("crm", ["hubspot", "salesforce"])
def test_crash_between_create_call_and_local_record(sandbox, engine, crm, monkeypatch):
    conn = _connector(sandbox, engine, crm)
    real = state.mark_tasks_created
    calls = {"n": 0}

    def crash_once(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("process killed after the create call")
        return real(*args, **kwargs)

    monkeypatch.setattr(state, "mark_tasks_created", crash_once)
    with pytest.raises(RuntimeError, match="process killed"):
        run_sync(conn, engine)
    pending = state.task_key_rows(engine, crm, list(_task_keys(sandbox, crm)))
    assert pending and {row["status"] for row in pending.values()} == {"pending"}
    out = run_sync(conn, engine, incremental=False)
    assert out.tasks_created == 0 and out.tasks_existing > 0
    assert max(_task_keys(sandbox, crm).values()) == 1
    rows = state.task_key_rows(engine, crm, list(_task_keys(sandbox, crm)))
    assert {row["status"] for row in rows.values()} == {"created"}


@pytest.mark.parametrize("crm,endpoint", [("hubspot", "hubspot.tasks.batch_create"),
                                          ("salesforce", "salesforce.composite.create")])
def test_response_lost_after_create_is_looked_up_not_resent(sandbox, engine, crm, endpoint):
    conn = _connector(sandbox, engine, crm)
    sandbox.set_faults(f"{endpoint}:drop=after,count=1")
    out = run_sync(conn, engine)
    assert not out.task_failures
    keys = _task_keys(sandbox, crm)
    assert keys and max(keys.values()) == 1
    assert out.tasks_created == 0 and out.tasks_existing == sum(keys.values())  # found, not re-sent


def test_supersede_completes_the_older_stage_task(sandbox, engine):
    conn = _connector(sandbox, engine, "hubspot")
    lead = sorted(sandbox_state(sandbox).hubspot.tables["contacts"].records)[0]
    from datetime import date

    old = TaskSpec(f"{lead}:mql:book_call", lead, "mql", "Book call", "b", date(2026, 12, 1), "high")
    first = conn.ensure_tasks([old], {})
    task_id = first.tasks_created[old.key]
    new = TaskSpec(f"{lead}:sql:send_proposal", lead, "sql", "Send proposal", "b", date(2026, 12, 3), "normal")
    second = conn.ensure_tasks([new], {lead: [f"{lead}:mql:"]})
    assert second.tasks_closed == [task_id]
    tasks = sandbox_state(sandbox).hubspot.tables["tasks"].records
    assert tasks[task_id]["hs_task_status"] == "COMPLETED"
    assert state.task_key_rows(engine, "hubspot", [old.key])[old.key]["status"] == "closed"
    again = conn.ensure_tasks([new], {lead: [f"{lead}:mql:"]})
    assert again.tasks_created == {} and again.tasks_closed == []
