from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import update

from flows import locks
from flows.audit import REDACTED, AuditEntry, AuditLog, read_audit, redact_value
from leadflow import store


def test_audit_is_written_and_read_by_lead_and_run(database_url):
    engine = store.make_engine(database_url)
    log = AuditLog(engine, run_id="run-1", flow="sync_leads", model_version="hc-1", dry_run=False)
    log.record([
        AuditEntry("hubspot", "101", "field_set", "leadflow_lead_score", None, 72, ["Demo requested"]),
        AuditEntry("hubspot", "101", "stage_move", "stage", "inquiry", "mql", ["Fit 80"]),
        AuditEntry("hubspot", "102", "task_created", None, None, "task-9"),
    ])
    AuditLog(engine, "run-2", "rescore", "hc-2", dry_run=True).record(
        [AuditEntry("hubspot", "101", "field_set", "leadflow_lead_score", 72, 75)])

    lead_rows = read_audit(engine, crm_id="101")
    assert [(r["run_id"], r["action"], r["old_value"], r["new_value"]) for r in lead_rows] == [
        ("run-1", "field_set", None, "72"), ("run-1", "stage_move", "inquiry", "mql"), ("run-2", "field_set", "72", "75")]
    assert lead_rows[0]["reasons"] == ["Demo requested"] and lead_rows[2]["dry_run"] == 1
    assert {r["crm_id"] for r in read_audit(engine, run_id="run-1")} == {"101", "102"}
    engine.dispose()


def test_patient_free_text_is_redacted():
    assert redact_value("pain_point", "chronic back pain", patient=False) == REDACTED
    assert redact_value("patient.service_requested", "IVF consult", patient=True) == REDACTED
    assert redact_value("reasons", ["requested service is offered"], patient=True) == REDACTED
    assert redact_value("lead_score", 80, patient=True) == 80
    assert redact_value("reasons", ["Fit 80"], patient=False) == ["Fit 80"]


def test_run_lock_excludes_a_second_run_and_expires(database_url):
    engine = store.make_engine(database_url)
    with locks.run_lock(engine, "salesforce", "run-a"):
        with pytest.raises(locks.RunLocked, match="salesforce"):
            locks.acquire(engine, "salesforce", "run-b")
        locks.acquire(engine, "hubspot", "run-b")  # another CRM is independent
    locks.acquire(engine, "salesforce", "run-c")
    with engine.begin() as conn:  # run-c died without releasing: its lease runs out
        conn.execute(update(store.run_locks).values(expires_at=datetime.now(timezone.utc) - timedelta(seconds=1)))
    locks.acquire(engine, "salesforce", "run-d")
    engine.dispose()


def test_partitions_run_under_their_parents_lock(database_url):
    engine = store.make_engine(database_url)
    with locks.run_lock(engine, "hubspot", "parent-1"):
        with locks.run_lock(engine, "hubspot", "part-a", parent="parent-1"):
            with locks.run_lock(engine, "hubspot", "part-b", parent="parent-1"):
                pass
        with pytest.raises(locks.RunLocked):
            with locks.run_lock(engine, "hubspot", "sync-x"):
                pass
    with pytest.raises(locks.RunLocked, match="does not hold the lock"):
        with locks.run_lock(engine, "hubspot", "part-c", parent="parent-1"):
            pass
    engine.dispose()
