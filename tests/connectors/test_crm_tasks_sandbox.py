"""Next-step tasks are never duplicated, because the CRM enforces one task per key (upsert on a
unique key field): reruns, crashes between the write and the state save, responses lost or held
past the client's timeout while the CRM applies the write; and a task a rep edited is not
overwritten."""

from __future__ import annotations

import time
from collections import Counter
from datetime import date

import pytest
from crm_harness import fast_retry
from crm_harness import calls, run_sync, sandbox_state, seed_hubspot, seed_salesforce
from sqlalchemy import delete

from state import leads as state
from connectors.crm.base import TaskSpec
from connectors.crm.factory import connector_for_sandbox
from connectors.crm.setup import hubspot_setup
from state.schema import task_keys

UPSERT = {"hubspot": "hubspot.tasks.batch_upsert", "salesforce": "salesforce.composite.upsert"}


def _connector(sandbox, engine, crm, **overrides):
    conn = connector_for_sandbox(sandbox, crm, engine, retry=overrides.pop("retry", fast_retry()), **overrides)
    if crm == "hubspot":  # hospitals; half of them engaged enough for the model to make them MQLs (a task each)
        hubspot_setup(conn)
        seed_hubspot(sandbox, 24, company_extra={"leadflow_org_type": "hospital"}, engaged=12)
    else:
        seed_salesforce(sandbox, 24, extra={"Org_Type__c": "Hospital"}, engaged=12)
    return conn


def _task_keys(sandbox, crm) -> Counter:
    st = sandbox_state(sandbox)
    if crm == "hubspot":
        rows = st.hubspot.tables["tasks"].records.values()
        return Counter(r.get("leadflow_task_key") for r in rows)
    return Counter(r.get("Leadflow_Task_Key__c") for r in st.salesforce.tables["Task"].records.values())


def _settled(sandbox, crm, held: float, seconds: float = 3.0) -> Counter:
    """The task keys once no request is held in the sandbox any more: the last request the run sent
    is held ``held`` seconds at most, then the keys must stay the same for a quarter second."""
    time.sleep(held)
    deadline = time.monotonic() + seconds
    keys = _task_keys(sandbox, crm)
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = _task_keys(sandbox, crm)
        if now == keys:
            return now
        keys = now
    return keys


@pytest.mark.parametrize("crm", ["hubspot", "salesforce"])
def test_reruns_and_crash_after_create_make_no_duplicates(sandbox, engine, crm):
    conn = _connector(sandbox, engine, crm)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_sync(conn, engine, crash_after_tasks=True)  # tasks created; their outcome and the watermark not recorded
    created = _task_keys(sandbox, crm)
    assert created and max(created.values()) == 1
    # the leads whose tasks were sent stay in progress: the next run retries them by id first
    assert set(state.pending_ids(engine, crm)) == {key.split(":")[0] for key in created}
    run_sync(conn, engine)
    run_sync(conn, engine, incremental=False)  # a full rerun re-plans every lead
    keys = _task_keys(sandbox, crm)
    assert keys == created


def test_the_tasks_of_small_pages_go_out_in_one_batch(sandbox, engine):
    """Pages of 5 leads hold their tasks back (TaskCarry) until a batch is full or the run ends: the
    12 tasks of five pages go out in one upsert, each once, and no lead is left in progress."""
    conn = _connector(sandbox, engine, "salesforce", page_size=5)
    sandbox.reset_stats()
    out = run_sync(conn, engine)
    assert out.summary.pages == 5
    assert out.tasks_created == 12 == sum(_task_keys(sandbox, "salesforce").values())
    assert calls(sandbox, UPSERT["salesforce"]) == {UPSERT["salesforce"]: 1}
    assert state.pending_ids(engine, "salesforce") == []


@pytest.mark.parametrize("crm", ["hubspot", "salesforce"])
def test_crash_between_the_upsert_and_the_local_record_is_confirmed_next_run(sandbox, engine, crm, monkeypatch):
    """The CRM applied the upsert, leadflow never recorded it: the key stays ``pending``, the next
    run finds the task and counts it created then (its first confirmation, so it gets audited)."""
    conn = _connector(sandbox, engine, crm)
    real = state.mark_tasks_created
    calls = {"n": 0}

    def crash_once(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("process killed after the upsert")
        return real(*args, **kwargs)

    monkeypatch.setattr(state, "mark_tasks_created", crash_once)
    with pytest.raises(RuntimeError, match="process killed"):
        run_sync(conn, engine)
    in_crm = _task_keys(sandbox, crm)
    pending = state.task_key_rows(engine, crm, list(in_crm))
    assert pending and {row["status"] for row in pending.values()} == {"pending"}
    out = run_sync(conn, engine, incremental=False)
    assert out.tasks_created == sum(in_crm.values()) and out.tasks_existing == 0
    assert _task_keys(sandbox, crm) == in_crm
    rows = state.task_key_rows(engine, crm, list(in_crm))
    assert {row["status"] for row in rows.values()} == {"created"}


@pytest.mark.parametrize("crm", ["hubspot", "salesforce"])
def test_upsert_held_past_the_client_timeout_lands_once_and_counts_truthfully(sandbox, engine, crm):
    """The first upsert is held past the client's timeout and applied anyway; the gate retries
    it (an upsert is idempotent): one task per key, and the run says it created them all."""
    conn = _connector(sandbox, engine, crm, timeout=0.3)
    sandbox.set_faults(f"{UPSERT[crm]}:timeout=1.0,count=1")
    first = run_sync(conn, engine)
    keys = _settled(sandbox, crm, held=1.0)
    assert not first.task_failures and keys and max(keys.values()) == 1
    assert first.tasks_created == sum(keys.values()) and first.tasks_existing == 0
    assert conn.api_usage()["retries"].get(UPSERT[crm].split(".", 1)[1]) == 1
    sandbox.set_faults(None)
    rerun = run_sync(conn, engine, incremental=False)
    assert _task_keys(sandbox, crm) == keys
    # each key is known created (the pipeline's task-key filter), so the rerun sends no task again
    assert rerun.tasks_created == 0 and state.created_task_keys(engine, crm, list(keys)) == set(keys)
    assert rerun.tasks_existing == 0 and conn.api_usage()["by_endpoint"].get(UPSERT[crm].split(".", 1)[1]) == 2


@pytest.mark.parametrize("crm", ["hubspot", "salesforce"])
def test_every_attempt_timed_out_yet_applied_the_clean_rerun_confirms_each_task_once(sandbox, engine, crm):
    """Every attempt of the upsert times out on the client while the CRM applies it: the run
    reports the tasks failed (their leads stay pending); the clean rerun finds each task, once,
    and counts it created (leadflow made it, and had never confirmed it)."""
    conn = _connector(sandbox, engine, crm, timeout=0.3, retry=fast_retry(attempts=2))
    sandbox.set_faults(f"{UPSERT[crm]}:timeout=0.6")
    first = run_sync(conn, engine)
    keys = _settled(sandbox, crm, held=0.6)
    assert first.task_failures and first.tasks_created == 0
    assert keys and max(keys.values()) == 1  # applied, and the retry updated rather than duplicated
    sandbox.set_faults(None)
    rerun = run_sync(conn, engine, incremental=False)
    assert _task_keys(sandbox, crm) == keys and not rerun.task_failures
    assert rerun.tasks_created == sum(keys.values()) and rerun.tasks_existing == 0


@pytest.mark.parametrize("crm", ["hubspot", "salesforce"])
def test_response_lost_after_the_upsert_applied_is_retried_and_counted_created(sandbox, engine, crm):
    conn = _connector(sandbox, engine, crm)
    sandbox.set_faults(f"{UPSERT[crm]}:drop=after,count=1")
    out = run_sync(conn, engine)
    assert not out.task_failures
    keys = _task_keys(sandbox, crm)
    assert keys and max(keys.values()) == 1
    assert out.tasks_created == sum(keys.values()) and out.tasks_existing == 0  # not "0 created"


@pytest.mark.parametrize("crm", ["hubspot", "salesforce"])
def test_a_task_a_rep_edited_is_not_overwritten_even_when_local_state_is_lost(sandbox, engine, crm):
    conn = _connector(sandbox, engine, crm)
    run_sync(conn, engine)
    st = sandbox_state(sandbox)
    if crm == "hubspot":
        table, edit = st.hubspot.tables["tasks"], {"hs_task_status": "IN_PROGRESS", "hs_task_subject": "Called, again Fri"}
    else:
        table, edit = st.salesforce.tables["Task"], {"Status": "In Progress", "Subject": "Called, again Fri"}
    edited = sorted(table.records)[0]
    with st.lock:
        table.update(edited, dict(edit), table.modified[edited] + 1)
    keys = _task_keys(sandbox, crm)
    with engine.begin() as db:
        db.execute(delete(task_keys))  # leadflow no longer knows it made these tasks
    out = run_sync(conn, engine, incremental=False)
    assert _task_keys(sandbox, crm) == keys
    assert out.tasks_created == 0 and out.tasks_existing == sum(keys.values())
    assert {k: table.records[edited].get(k) for k in edit} == edit


def test_supersede_completes_the_older_stage_task(sandbox, engine):
    conn = _connector(sandbox, engine, "hubspot")
    lead = sorted(sandbox_state(sandbox).hubspot.tables["contacts"].records)[0]
    old = TaskSpec(f"{lead}:mql:book_call", lead, "mql", "Book call", "b", date(2026, 12, 1), "high")
    first = conn.ensure_tasks([old], {})
    task_id = first.tasks_created[old.key]
    assert sandbox_state(sandbox).hubspot.associated("tasks", task_id, "contacts") == {lead: [204]}
    new = TaskSpec(f"{lead}:sql:send_proposal", lead, "sql", "Send proposal", "b", date(2026, 12, 3), "normal")
    second = conn.ensure_tasks([new], {lead: [f"{lead}:mql:"]})
    assert second.tasks_closed == [task_id]
    tasks = sandbox_state(sandbox).hubspot.tables["tasks"].records
    assert tasks[task_id]["hs_task_status"] == "COMPLETED"
    assert state.task_key_rows(engine, "hubspot", [old.key])[old.key]["status"] == "closed"
    again = conn.ensure_tasks([new], {lead: [f"{lead}:mql:"]})
    assert again.tasks_created == {} and again.tasks_closed == []


@pytest.mark.parametrize("status", [400, 403])
def test_a_failed_association_leaves_the_key_pending_and_the_next_call_links_it(sandbox, engine, status):
    """The task landed, its link to the contact did not (a rejected request, or an error that fails
    the whole batch): the key stays pending, so the next call finds the task, links it and counts
    it created."""
    conn = _connector(sandbox, engine, "hubspot")
    lead = sorted(sandbox_state(sandbox).hubspot.tables["contacts"].records)[1]
    spec = TaskSpec(f"{lead}:mql:book_call", lead, "mql", "Book call", "b", date(2026, 12, 1), "high")
    sandbox.set_faults(f"hubspot.associations.batch_create:status={status},count=1")
    first = conn.ensure_tasks([spec], {})
    assert spec.key in first.task_failures and not first.tasks_created
    assert state.task_key_rows(engine, "hubspot", [spec.key])[spec.key]["status"] == "pending"
    second = conn.ensure_tasks([spec], {})
    task_id = second.tasks_created[spec.key]
    assert sandbox_state(sandbox).hubspot.associated("tasks", task_id, "contacts") == {lead: [204]}
    assert _task_keys(sandbox, "hubspot")[spec.key] == 1


def test_a_task_key_property_without_unique_values_fails_the_tasks_in_one_call(sandbox, engine):
    """A portal whose key property was made before it had to be unique: the upsert is refused for
    every task alike, so the batch fails as one (named in each task's reason), not split in halves."""
    conn = _connector(sandbox, engine, "hubspot")
    sandbox_state(sandbox).hubspot.properties["tasks"]["leadflow_task_key"]["hasUniqueValue"] = False
    leads = sorted(sandbox_state(sandbox).hubspot.tables["contacts"].records)[:8]
    specs = [TaskSpec(f"{lead}:mql:book_call", lead, "mql", "Book call", "b", date(2026, 12, 1), "high")
             for lead in leads]
    out = conn.ensure_tasks(specs, {})
    assert set(out.task_failures) == {s.key for s in specs} and not out.tasks_created
    assert all("non-unique" in reason for reason in out.task_failures.values())
    assert conn.api_usage()["by_endpoint"]["tasks.batch_upsert"] == 1
    assert not _task_keys(sandbox, "hubspot")
