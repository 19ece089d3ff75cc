"""``leadflow state copy``: every state table moves, column by column, ids and order kept."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, insert, select

from state.audit import AuditEntry, AuditLog, verify_chain
from state.runs import record_run
from typer.testing import CliRunner

from state import schema as store
from state.copy import StateCopyError, copied_tables, copy_state

T0 = datetime(2026, 11, 27, 9, 30, tzinfo=timezone.utc)

pytestmark = pytest.mark.postgres


def _fill(url: str, audit_rows: int = 5) -> None:
    engine = store.make_engine(url)
    with engine.begin() as conn:
        conn.execute(insert(store.watermarks), [{"crm": "salesforce", "object": "Lead", "value": T0, "updated_at": T0}])
        conn.execute(insert(store.written_values), [
            {"crm": "salesforce", "crm_id": "00Q1", "field": "Lead_Score__c", "value": "72", "written_at": T0},
            {"crm": "salesforce", "crm_id": "00Q1", "field": "__seen__", "value": f"write|{T0.isoformat()}",
             "written_at": T0}])
        conn.execute(insert(store.task_keys), [{"crm": "salesforce", "task_key": "00Q1:mql:call", "crm_id": "00Q1",
                                               "crm_task_id": "00T1", "status": "created", "created_at": T0}])
        conn.execute(insert(store.pending_leads), [{"crm": "salesforce", "crm_id": "00Q2", "kind": "quarantined",
                                                   "reason": "email: not an address", "attempts": 2,
                                                   "first_seen": T0, "last_seen": T0 + timedelta(hours=1)}])
        conn.execute(insert(store.org_members), [{"crm": "salesforce", "crm_id": "00Q1", "org_key": "npi:1234567890",
                                                 "function": "it", "decision_maker": 1}])
        conn.execute(insert(store.lead_facts), [{"crm": "salesforce", "crm_id": "00Q1", "source": "referral",
                                                 "segment": "health_system", "stage": "mql", "lead_score": 72,
                                                 "unmet": ["timeline"], "traits": {"decision_role": "user"},
                                                 "scored_at": T0}])
        conn.execute(insert(store.outcomes), [{"crm": "salesforce", "crm_id": "00Q9", "converted": 1,
                                               "stage_dates": {"opportunity": T0.isoformat()}, "read_at": T0}])
        conn.execute(insert(store.stage_history), [{"crm": "salesforce", "crm_id": "00Q9", "stage": "sql", "at": T0}])
        conn.execute(insert(store.enrichment_cache), [
            {"provider": "nppes", "cache_key": "org:acme", "payload": {"npi": "1234567890", "taxonomy": ["282N00000X"]},
             "fetched_at": T0, "expires_at": T0 + timedelta(days=30)},
            {"provider": "nppes", "cache_key": "org:none", "payload": None, "fetched_at": T0,
             "expires_at": T0 + timedelta(days=1)}])
        conn.execute(insert(store.audit_log), [
            {"at": T0 + timedelta(seconds=i), "run_id": "run-1", "flow": "sync-leads", "crm": "salesforce",
             "crm_id": f"00Q{i}", "action": "field_set", "field": "Lead_Score__c", "old_value": None,
             "new_value": str(i), "model_version": "m1", "reasons": ["fit: health system"], "dry_run": 0}
            for i in range(audit_rows)])
        conn.execute(insert(store.notification_ids), [{"source": "hubspot", "event_id": "1001", "received_at": T0}])
        conn.execute(insert(store.write_fences), [
            {"crm": "hubspot", "object": "contacts", "stamp": 1_764_236_000_000, "fence_ms": 1_764_236_000_250,
             "opened_at": T0},
            {"crm": "hubspot", "object": "contacts", "stamp": 1_764_236_000_001, "fence_ms": None, "opened_at": T0}])
        conn.execute(insert(store.crm_properties), [{"crm": "hubspot", "object": "contacts",
                                                    "name": "leadflow_synced_at", "confirmed_at": T0}])
        conn.execute(store.audit_log.delete().where(store.audit_log.c.id == 2))  # a gap: ids are copied, not renumbered
    AuditLog(engine, run_id="run-2", flow="sync-leads", model_version="m1", dry_run=False).record(
        [AuditEntry("hubspot", "101", "field_set", "leadflow_lead_score", None, "70")])  # a hash-chained CRM
    record_run(engine, {"run_id": "run-2", "flow": "sync_leads", "crm": "hubspot", "read": 1, "changed": 1})
    with engine.begin() as conn:
        conn.execute(insert(store.outcomes), [{"crm": "salesforce", "crm_id": "00Q1", "lead_status": "Working",
                                               "converted": 1, "converted_at": T0, "opportunity_won": 1,
                                               "opportunity_amount": 125000.0, "read_at": T0}])
        conn.execute(insert(store.stage_history), [{"crm": "salesforce", "crm_id": "00Q1", "stage": "mql",
                                                    "previous_stage": "inquiry", "at": T0, "run_id": "run-1"}])
    engine.dispose()


def _contents(url: str) -> dict[str, list[tuple]]:
    engine = store.make_engine(url)
    out = {}
    with engine.connect() as conn:
        for table in copied_tables():
            order = list(table.primary_key.columns)
            rows = conn.execute(select(table).order_by(*order)).all()
            out[table.name] = [tuple(v.astimezone(timezone.utc) if isinstance(v, datetime) and v.tzinfo else
                                     v.replace(tzinfo=timezone.utc) if isinstance(v, datetime) else v for v in row)
                               for row in rows]
    engine.dispose()
    return out


def test_every_table_moves_from_sqlite_to_postgres_unchanged(sqlite_url, postgres_url):
    _fill(sqlite_url)
    report = copy_state(sqlite_url, postgres_url, batch_size=2)
    before, after = _contents(sqlite_url), _contents(postgres_url)
    assert after == before
    assert all(before[t.name] for t in copied_tables()), "every table has rows to copy"
    assert [row[0] for row in after["lf_audit_log"]] == [1, 3, 4, 5, 6]
    assert report.rows["lf_audit_log"] == 5 and report.total == sum(len(rows) for rows in before.values())
    engine = store.make_engine(postgres_url)
    with engine.begin() as conn:  # the id sequence continues after the copied ids
        new_id = conn.execute(insert(store.audit_log).values(
            at=T0, run_id="run-2", flow="sync-leads", crm="salesforce", crm_id="00Q9", action="field_set",
            dry_run=0).returning(store.audit_log.c.id)).scalar_one()
    assert new_id == 7
    assert verify_chain(engine, "hubspot").ok  # the chain and its head came along
    engine.dispose()


def test_a_filled_target_is_refused_unless_forced(sqlite_url, postgres_url):
    _fill(sqlite_url)
    _fill(postgres_url, audit_rows=9)
    with pytest.raises(StateCopyError, match="already holds state"):
        copy_state(sqlite_url, postgres_url)
    copy_state(sqlite_url, postgres_url, force=True)
    assert _contents(postgres_url) == _contents(sqlite_url)


def test_a_copy_while_a_run_holds_its_lock_is_refused(sqlite_url, postgres_url):
    _fill(sqlite_url)
    engine = store.make_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(insert(store.run_locks).values(crm="hubspot", holder="run-7", acquired_at=datetime.now(timezone.utc),
                                                    expires_at=datetime.now(timezone.utc) + timedelta(minutes=5)))
    with pytest.raises(StateCopyError, match="holds the lock for hubspot"):
        copy_state(sqlite_url, postgres_url)
    target = store.make_engine(postgres_url)
    with target.connect() as conn:
        assert conn.execute(select(func.count()).select_from(store.audit_log)).scalar_one() == 0


def test_the_cli_copies_and_names_the_target_without_its_password(sqlite_url, postgres_url, monkeypatch):
    from leadflow.cli import app

    _fill(sqlite_url)
    monkeypatch.setenv("LEADFLOW_DATABASE_URL", sqlite_url)
    runner = CliRunner()
    done = runner.invoke(app, ["state", "copy", "--to", postgres_url])
    assert done.exit_code == 0, done.output
    assert "lf_audit_log: 5 row(s)" in done.output and "counts verified" in done.output
    again = runner.invoke(app, ["state", "copy", "--to", postgres_url])
    assert again.exit_code == 2 and again.output.count("\n") == 1 and "use --force" in again.output
    failed = runner.invoke(app, ["state", "copy", "--to", "postgresql+psycopg://lf:hunter2-SECRET@127.0.0.1:1/x"])
    assert failed.exit_code == 1 and "hunter2-SECRET" not in failed.output and failed.output.count("\n") == 1
