import os
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import insert, select, update
from typer.testing import CliRunner

from state import locks
from state.audit import REDACTED, AuditEntry, AuditLog, read_audit, redact_value
from state import schema as store

PROJECT_ROOT = Path(__file__).resolve().parents[2]
HOLDER_SCRIPT = """
import sys, time
from state.locks import run_lock
from state.schema import make_engine
with run_lock(make_engine(sys.argv[1]), "hubspot", "cli-run-7"):
    print("held", flush=True)
    time.sleep(600)
"""


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


def _holder_process(url: str, lease_seconds: float) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), locks.LEASE_ENV: str(lease_seconds)}
    proc = subprocess.Popen([sys.executable, "-c", HOLDER_SCRIPT, url], env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_killed_holder_s_lock_is_taken_over_once_its_heartbeat_lapses(database_url):
    """A holder process renews its short lease while alive (the lock outlives the first lease), and
    once it is SIGKILLed the next run takes the lock as soon as the lease lapses: no manual step."""
    lease = 3.0
    engine = store.make_engine(database_url)
    proc = _holder_process(database_url, lease)
    try:
        first = locks.read_lock(engine, "hubspot")
        time.sleep(lease * 1.5)
        with pytest.raises(locks.RunLocked) as refused:
            locks.acquire(engine, "hubspot", "next-run", lease=timedelta(seconds=lease))
        renewed = locks.read_lock(engine, "hubspot")
        assert renewed.expires_at > first.expires_at + timedelta(seconds=lease / 2)  # past its first lease
        message = str(refused.value)
        assert "\n" not in message and refused.value.exit_code == 5
        assert f"run cli-run-7 (host {socket.gethostname()}, pid {proc.pid}) since " in message
        assert "lease ends" in message

        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        killed = time.monotonic()
        while True:
            try:
                locks.acquire(engine, "hubspot", "next-run", lease=timedelta(seconds=lease))
                break
            except locks.RunLocked:
                assert time.monotonic() - killed < lease + 2, "the dead holder's lock was not taken over"
                time.sleep(0.1)
        assert locks.read_lock(engine, "hubspot").holder == "next-run"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        engine.dispose()


def test_a_live_holder_s_lease_is_renewed_past_its_first_expiry(sqlite_url):
    engine = store.make_engine(sqlite_url)
    lease = timedelta(seconds=1.5)
    with locks.run_lock(engine, "salesforce", "long-run", lease=lease) as held:
        first = locks.read_lock(engine, "salesforce").expires_at
        time.sleep(3)
        held.check()
        assert locks.read_lock(engine, "salesforce").expires_at > first + lease
        with pytest.raises(locks.RunLocked, match="locked by run long-run"):
            locks.acquire(engine, "salesforce", "other", lease=lease)
        thread = held._thread
    assert not thread.is_alive() and thread.daemon
    assert locks.read_lock(engine, "salesforce") is None
    engine.dispose()


def test_a_run_learns_it_lost_its_lock_before_its_next_write(sqlite_url):
    engine = store.make_engine(sqlite_url)
    lease = timedelta(seconds=30)
    with locks.run_lock(engine, "hubspot", "slow-run", lease=lease) as held:
        with engine.begin() as conn:  # its lease lapsed while it was stalled, and another run took over
            conn.execute(update(store.run_locks).values(holder="run-b", host="h2", pid=7))
        held.beat_once()
        with pytest.raises(locks.LockLost, match="lost its lock to run run-b \\(host h2, pid 7\\)"):
            held.check()
        log = AuditLog(engine, "slow-run", "sync_leads", "m", dry_run=False)
        log.guard = held.check
        with pytest.raises(locks.LockLost):  # the write already made keeps its audit row, then the run stops
            log.record([AuditEntry("hubspot", "1", "field_set", "f", None, 1)])
        assert len(read_audit(engine, crm="hubspot")) == 1
        with pytest.raises(locks.LockLost):
            next(held.guard(iter(["page 2"])))
    assert locks.read_lock(engine, "hubspot").holder == "run-b"  # leaving does not release another's lock
    engine.dispose()


def test_a_run_that_cannot_renew_stops_before_its_lease_could_be_taken(sqlite_url, monkeypatch):
    engine = store.make_engine(sqlite_url)
    with locks.run_lock(engine, "hubspot", "cut-off", lease=timedelta(seconds=0.4)) as held:
        monkeypatch.setattr(locks, "renew", lambda *a, **k: (_ for _ in ()).throw(OSError("store unreachable")))
        time.sleep(0.5)
        with pytest.raises(locks.LockLost, match="could not renew its lock"):
            held.check()
    engine.dispose()


def test_a_holder_whose_prefect_flow_run_is_over_is_taken_over_at_once(prefect_server, database_url):
    from prefect import flow
    from prefect.runtime import flow_run

    engine = store.make_engine(database_url)
    far = datetime.now(timezone.utc) + timedelta(hours=1)

    def hold(holder: str) -> None:
        with engine.begin() as conn:
            conn.execute(store.run_locks.delete())
            conn.execute(insert(store.run_locks).values(crm="hubspot", holder=holder, host="worker-3", pid=4242,
                                                        acquired_at=datetime.now(timezone.utc), expires_at=far))

    @flow(name="lock-holder")
    def holder_flow() -> str:
        hold(str(flow_run.id))  # a live flow run holds the lock: refused
        with pytest.raises(locks.RunLocked, match="host worker-3, pid 4242"):
            locks.acquire(engine, "hubspot", "next-run")
        return str(flow_run.id)

    finished = holder_flow()
    hold(finished)  # its run is over (completed), its lease still an hour long: taken over now
    locks.acquire(engine, "hubspot", "next-run")
    assert locks.read_lock(engine, "hubspot").holder == "next-run"

    hold("0b6d2f4e-8f1c-4d59-9a39-1d1e3c7a0c55")  # a flow run id this Prefect server does not know
    with pytest.raises(locks.RunLocked):
        locks.acquire(engine, "hubspot", "next-run")
    engine.dispose()


def test_a_partition_stops_when_its_parent_loses_the_lock(sqlite_url):
    engine = store.make_engine(sqlite_url)
    lease = timedelta(seconds=30)
    with locks.run_lock(engine, "hubspot", "parent-2", lease=lease) as parent:
        with locks.run_lock(engine, "hubspot", "part-a", parent="parent-2", lease=lease) as part:
            part.beat_once()
            part.check()
            parent.beat_once()
            with engine.begin() as conn:
                conn.execute(update(store.run_locks).values(holder="sync-z"))
            part.beat_once()
            with pytest.raises(locks.LockLost, match="partitioned backfill's lock"):
                part.check()
    engine.dispose()


def test_unlock_asks_then_releases_and_audits(sqlite_url, monkeypatch):
    from state.audit import verify_chain
    from leadflow.cli import app

    monkeypatch.setenv("LEADFLOW_DATABASE_URL", sqlite_url)
    engine = store.make_engine(sqlite_url)
    locks.acquire(engine, "salesforce", "stuck-run")
    runner = CliRunner()

    kept = runner.invoke(app, ["unlock", "--crm", "salesforce"], input="n\n")
    assert kept.exit_code == 1 and "locked by run stuck-run" in kept.output and "Release it?" in kept.output
    assert locks.read_lock(engine, "salesforce").holder == "stuck-run"

    released = runner.invoke(app, ["unlock", "--crm", "salesforce"], input="y\n")
    assert released.exit_code == 0, released.output
    assert "released the lock of run stuck-run" in released.output
    assert locks.read_lock(engine, "salesforce") is None
    row = read_audit(engine, crm="salesforce")[-1]
    assert row["action"] == "lock_released" and row["crm_id"] == "stuck-run" and "released by" in row["new_value"]
    assert verify_chain(engine, "salesforce").ok

    locks.acquire(engine, "salesforce", "stuck-again")
    assert runner.invoke(app, ["unlock", "--crm", "salesforce", "--yes"]).exit_code == 0
    assert locks.read_lock(engine, "salesforce") is None
    assert "not locked" in runner.invoke(app, ["unlock", "--crm", "salesforce"]).output
    engine.dispose()
