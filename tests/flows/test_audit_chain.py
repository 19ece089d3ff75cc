"""The audit log's hash chain: verify passes on an untouched log and names the first edited, inserted
or deleted row, on SQLite and PostgreSQL; concurrent writers never fork a CRM's chain."""

from __future__ import annotations

import multiprocessing
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import delete, func, insert, select, update

from state.audit import AuditEntry, AuditLog, audited_crms, verify_chain
from state import schema as store

AT = datetime(2026, 11, 27, 12, 0, 0, 123456, tzinfo=timezone.utc)


def _fill(engine, rows: int = 12) -> list[int]:
    log = AuditLog(engine, run_id="run-1", flow="sync_leads", model_version="hc-1", dry_run=False)
    for start in range(0, rows, 4):
        log.record([AuditEntry("hubspot", str(100 + i), "field_set", "leadflow_lead_score", None, 70 + i,
                               ["Fit 80", "näher: \"quoted\""], at=AT + timedelta(seconds=i))
                    for i in range(start, start + 4)])
    AuditLog(engine, "run-2", "rescore", None, dry_run=True).record(
        [AuditEntry("salesforce", "00Q1", "stage_move", "Status", "Open", "MQL")])
    with engine.connect() as conn:
        return list(conn.execute(select(store.audit_log.c.id).where(store.audit_log.c.crm == "hubspot")
                                 .order_by(store.audit_log.c.seq)).scalars())


def _row(engine, row_id: int) -> dict:
    with engine.connect() as conn:
        return dict(conn.execute(select(store.audit_log).where(store.audit_log.c.id == row_id)).mappings().one())


def test_an_untouched_log_verifies(database_url):
    engine = store.make_engine(database_url)
    _fill(engine)
    assert audited_crms(engine) == ["hubspot", "salesforce"]
    report = verify_chain(engine, "hubspot")
    assert report.ok and report.rows == 12
    assert verify_chain(engine, "salesforce").ok and verify_chain(engine, "never-used").ok
    engine.dispose()


def test_verify_names_an_edited_row(database_url):
    engine = store.make_engine(database_url)
    ids = _fill(engine)
    with engine.begin() as conn:
        conn.execute(update(store.audit_log).where(store.audit_log.c.id == ids[5]).values(new_value="99"))
    report = verify_chain(engine, "hubspot")
    assert report.problem == f"hubspot: audit row id {ids[5]} (seq 6) was edited: its content does not match its hash"
    assert verify_chain(engine, "salesforce").ok  # one chain per CRM
    engine.dispose()


def test_verify_names_an_edited_row_whose_hash_was_recomputed(database_url):
    engine = store.make_engine(database_url)
    ids = _fill(engine)
    row = _row(engine, ids[3])
    forged = {**row, "reasons": ["edited"]}
    with engine.begin() as conn:
        conn.execute(update(store.audit_log).where(store.audit_log.c.id == ids[3]).values(
            reasons=["edited"], row_hash=store.audit_row_hash(row["prev_hash"], forged)))
    assert verify_chain(engine, "hubspot").problem.startswith("hubspot: audit row seq 4 was edited")
    engine.dispose()


def test_verify_names_an_inserted_row(database_url):
    engine = store.make_engine(database_url)
    ids = _fill(engine)
    values = {k: v for k, v in _row(engine, ids[2]).items() if k not in ("id", "seq", "prev_hash", "row_hash")}
    with engine.begin() as conn:
        inserted = conn.execute(insert(store.audit_log).values({**values, "new_value": "5"})).inserted_primary_key[0]
    assert verify_chain(engine, "hubspot").problem == (
        f"hubspot: audit row id {inserted} was inserted: it has no place in the chain (no seq)")

    with engine.begin() as conn:  # given the next seq and a plausible hash, it is past the chain head
        last = _row(engine, ids[-1])
        conn.execute(update(store.audit_log).where(store.audit_log.c.id == inserted).values(
            seq=13, prev_hash=last["row_hash"], row_hash="f" * 64))
    assert verify_chain(engine, "hubspot").problem == (
        f"hubspot: audit row id {inserted} (seq 13) was inserted: it lies past the chain head (seq 12)")
    engine.dispose()


def test_verify_names_a_deleted_row(database_url):
    engine = store.make_engine(database_url)
    ids = _fill(engine)
    with engine.begin() as conn:
        conn.execute(delete(store.audit_log).where(store.audit_log.c.id == ids[-1]))
    assert verify_chain(engine, "hubspot").problem == (
        "hubspot: audit row(s) seq 12 deleted (the chain ends at seq 11, its head at 12)")
    with engine.begin() as conn:
        conn.execute(delete(store.audit_log).where(store.audit_log.c.id.in_([ids[6], ids[7]])))
    assert verify_chain(engine, "hubspot").problem == (
        "hubspot: audit row(s) seq 7-8 deleted (the chain skips from seq 6 to 9)")
    engine.dispose()


def test_the_hash_is_the_same_on_sqlite_and_postgresql(sqlite_url, postgres_url):
    """Both stores give the same hashes, and verify reads them back alike, for a time recorded in
    another zone (SQLite stores it naive, PostgreSQL in its session's zone)."""
    heads = []
    for url in (sqlite_url, postgres_url):
        engine = store.make_engine(url)
        _fill(engine)
        AuditLog(engine, "run-3", "sync_leads", "hc-1", dry_run=False).record([AuditEntry(
            "hubspot", "200", "task_created", "200:mql:call", None, "T1",
            at=datetime(2026, 11, 27, 14, 0, 0, 5, tzinfo=timezone(timedelta(hours=2))))])
        assert verify_chain(engine, "hubspot").ok
        with engine.connect() as conn:
            heads.append(conn.execute(select(store.audit_heads.c.row_hash)
                                      .where(store.audit_heads.c.crm == "hubspot")).scalar_one())
        engine.dispose()
    assert heads[0] == heads[1]


def _append_from_process(url: str, writer: int, batches: int) -> None:
    engine = store.make_engine(url)
    log = AuditLog(engine, run_id=f"partition-{writer}", flow="backfill", model_version="m", dry_run=False)
    for batch in range(batches):
        log.record([AuditEntry("hubspot", f"{writer}-{batch}-{i}", "field_set", "f", None, i) for i in range(5)])
    engine.dispose()


def test_concurrent_threads_and_processes_keep_one_chain(database_url):
    engine = store.make_engine(database_url)
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_append_from_process, args=(database_url, w, 8)) for w in range(2)]
    for process in processes:
        process.start()
    threads = [threading.Thread(target=_append_from_process, args=(database_url, 10 + w, 8)) for w in range(3)]
    for thread in threads:
        thread.start()
    for worker in [*processes, *threads]:
        worker.join(timeout=120)
    assert all(p.exitcode == 0 for p in processes)
    with engine.connect() as conn:
        seqs = list(conn.execute(select(store.audit_log.c.seq).order_by(store.audit_log.c.seq)).scalars())
        distinct_prev = conn.execute(select(func.count(store.audit_log.c.prev_hash.distinct()))).scalar_one()
    assert seqs == list(range(1, 5 * 5 * 8 + 1))
    assert distinct_prev == len(seqs)  # no two rows hang off the same predecessor: no fork
    assert verify_chain(engine, "hubspot").ok
    engine.dispose()


def test_verify_while_a_run_appends_passes(database_url):
    engine = store.make_engine(database_url)
    _fill(engine)
    done = threading.Event()
    appended: list[int] = []

    def append() -> None:
        log = AuditLog(engine, "run-live", "sync_leads", "m", dry_run=False)
        while not done.is_set():
            log.record([AuditEntry("hubspot", str(i), "field_set", "f", None, i) for i in range(3)])
            appended.append(3)

    writer = threading.Thread(target=append)
    writer.start()
    deadline = time.monotonic() + 60
    try:
        reports = [verify_chain(engine, "hubspot") for _ in range(15)]
        while len(appended) < 2 and time.monotonic() < deadline:  # a loaded machine: let the writer in
            reports.append(verify_chain(engine, "hubspot"))
    finally:
        done.set()
        writer.join()
    assert [r.problem for r in reports if not r.ok] == []
    assert reports[-1].rows > 12 and verify_chain(engine, "hubspot").ok
    engine.dispose()
