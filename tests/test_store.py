from datetime import datetime, timezone

from sqlalchemy import insert, select

from state import schema as store


def test_schema_creates_and_round_trips(database_url):
    engine = store.make_engine(database_url)
    now = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)
    with engine.begin() as conn:
        conn.execute(insert(store.watermarks).values(crm="hubspot", object="contacts", value=now, updated_at=now))
        conn.execute(insert(store.audit_log).values(
            at=now, run_id="r1", flow="sync_leads", crm="hubspot", crm_id="1", action="field_set",
            field="leadflow_stage", old_value=None, new_value="mql", model_version="m1",
            reasons=["fit"], dry_run=0))
    with engine.connect() as conn:
        mark = conn.execute(select(store.watermarks.c.value)).scalar_one()
        audit = conn.execute(select(store.audit_log)).mappings().one()
    assert mark.replace(tzinfo=mark.tzinfo or timezone.utc) == now
    assert audit["reasons"] == ["fit"] and audit["id"] >= 1
    engine.dispose()


def test_insert_many_writes_what_execute_would_and_upserts(database_url):
    """The driver-level executemany path gives the same stored values as SQLAlchemy's own insert
    (datetimes, JSON, NULLs), and with conflict keys updates existing rows instead of failing."""
    engine = store.make_engine(database_url)
    at = datetime(2026, 11, 27, 12, 30, 15, 123456, tzinfo=timezone.utc)
    columns = ("at", "run_id", "flow", "crm", "crm_id", "action", "field", "old_value", "new_value",
               "model_version", "reasons", "dry_run")
    rows = [(at, "r2", "sync_leads", "salesforce", f"00Q{i}", "field_set", "Lead_Score__c", None,
             f"{i}", "m1", ["fit: 'quoted' \"both\"", "näher"] if i % 2 else None, 0) for i in range(3)]
    with engine.begin() as conn:
        store.insert_many(conn, store.audit_log, columns, rows)
        conn.execute(insert(store.audit_log).values(dict(zip(columns, rows[1]))))
    with engine.connect() as conn:
        stored = conn.execute(select(store.audit_log).order_by(store.audit_log.c.id)).mappings().all()
    fast, reference = [dict(r) for r in stored[:3]], dict(stored[3])
    assert [r["crm_id"] for r in fast] == ["00Q0", "00Q1", "00Q2"]
    assert {k: v for k, v in fast[1].items() if k != "id"} == {k: v for k, v in reference.items() if k != "id"}
    assert fast[1]["reasons"] == ["fit: 'quoted' \"both\"", "näher"] and fast[0]["reasons"] is None
    assert fast[0]["at"].replace(tzinfo=fast[0]["at"].tzinfo or timezone.utc) == at

    marks = ("crm", "object", "value", "updated_at")
    later = datetime(2026, 11, 28, tzinfo=timezone.utc)
    with engine.begin() as conn:
        store.insert_many(conn, store.watermarks, marks, [("hubspot", "contacts", at, at)], ["crm", "object"])
        store.insert_many(conn, store.watermarks, marks, [("hubspot", "contacts", later, later),
                                                          ("salesforce", "Lead", at, at)], ["crm", "object"])
    with engine.connect() as conn:
        values = dict(conn.execute(select(store.watermarks.c.crm, store.watermarks.c.value)).all())
    assert {k: v.replace(tzinfo=v.tzinfo or timezone.utc) for k, v in values.items()} == {
        "hubspot": later, "salesforce": at}
    engine.dispose()


def _previous_version_store(url: str) -> None:
    """A store as the version before the audit chain and heartbeat locks made it."""
    from sqlalchemy import JSON, BigInteger, Column, DateTime, Index, Integer, MetaData, String, Table, Text, create_engine

    old = MetaData()
    Table("lf_audit_log", old,
          Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
          Column("at", DateTime(timezone=True), nullable=False), Column("run_id", String(64), nullable=False),
          Column("flow", String(60), nullable=False), Column("crm", String(20), nullable=False),
          Column("crm_id", String(64), nullable=False), Column("action", String(30), nullable=False),
          Column("field", String(120)), Column("old_value", Text), Column("new_value", Text),
          Column("model_version", String(40)), Column("reasons", JSON), Column("dry_run", Integer, nullable=False),
          Index("ix_lf_audit_lead", "crm", "crm_id"), Index("ix_lf_audit_run", "run_id"))
    Table("lf_run_locks", old, Column("crm", String(20), primary_key=True),
          Column("holder", String(100), nullable=False), Column("acquired_at", DateTime(timezone=True), nullable=False),
          Column("expires_at", DateTime(timezone=True), nullable=False))
    engine = create_engine(url)
    old.create_all(engine)
    at = datetime(2026, 11, 1, 9, 30, 0, 250000, tzinfo=timezone.utc)
    with engine.begin() as conn:
        for i, crm in enumerate(["hubspot", "salesforce", "hubspot", "hubspot"]):
            conn.execute(old.tables["lf_audit_log"].insert().values(
                at=at, run_id="old-run", flow="sync_leads", crm=crm, crm_id=f"L{i}", action="field_set",
                field="score", old_value=None, new_value=str(i), model_version="m0",
                reasons=["Fit 80"] if i % 2 == 0 else None, dry_run=0))
        conn.execute(old.tables["lf_run_locks"].insert().values(
            crm="salesforce", holder="old-holder", acquired_at=at, expires_at=at))
    engine.dispose()


def test_a_store_of_the_previous_version_is_upgraded_and_its_audit_rows_chained(database_url):
    from state.audit import AuditEntry, AuditLog, verify_chain
    from state.locks import acquire, read_lock
    from flows.runs import read_runs, record_run

    _previous_version_store(database_url)
    engine = store.make_engine(database_url)
    with engine.connect() as conn:
        chained = conn.execute(select(store.audit_log.c.crm, store.audit_log.c.seq)
                               .order_by(store.audit_log.c.id)).all()
    assert [tuple(r) for r in chained] == [("hubspot", 1), ("salesforce", 1), ("hubspot", 2), ("hubspot", 3)]
    assert verify_chain(engine, "hubspot").ok and verify_chain(engine, "salesforce").ok

    AuditLog(engine, "new-run", "sync_leads", "m1", dry_run=False).record(
        [AuditEntry("hubspot", "L9", "field_set", "score", None, 9)])
    assert verify_chain(engine, "hubspot").rows == 4 and verify_chain(engine, "hubspot").ok
    assert read_lock(engine, "salesforce").host is None  # the old lock row reads; its lapsed lease is taken over
    acquire(engine, "salesforce", "new-holder")
    record_run(engine, {"run_id": "r1", "flow": "sync_leads", "crm": "hubspot", "read": 3})
    assert read_runs(engine)[0]["outcome"] == "success"
    engine.dispose()

    again = store.make_engine(database_url)  # the upgrade runs once: a later unchained row stays unchained
    with again.begin() as conn:
        conn.execute(insert(store.audit_log).values(
            at=datetime.now(timezone.utc), run_id="forged", flow="sync_leads", crm="hubspot", crm_id="L1",
            action="field_set", dry_run=0))
    assert store.upgrade_schema(store.make_engine(database_url)) == {}
    assert "was inserted" in verify_chain(again, "hubspot").problem
    again.dispose()


def test_a_shared_timestamp_is_rendered_once_and_equal_instants_of_other_zones_keep_their_own(database_url):
    """``insert_many`` processes a value object shared by many rows once; two equal datetimes
    of different zones are different objects and each is stored as itself."""
    from datetime import timedelta

    engine = store.make_engine(database_url)
    utc_time = datetime(2026, 11, 27, 10, 0, tzinfo=timezone.utc)
    plus_one = datetime(2026, 11, 27, 11, 0, tzinfo=timezone(timedelta(hours=1)))
    assert utc_time == plus_one
    columns = ("crm", "crm_id", "field", "value", "written_at")
    rows = [("hubspot", str(i), "f", "v", utc_time if i % 2 else plus_one) for i in range(6)]
    with engine.begin() as conn:
        store.insert_many(conn, store.written_values, columns, rows)
        for crm_id, at in (("utc", utc_time), ("plus_one", plus_one)):  # SQLAlchemy's own rendering
            conn.execute(insert(store.written_values).values(crm="salesforce", crm_id=crm_id, field="f", value="v",
                                                             written_at=at))
    with engine.connect() as conn:
        stored = {(crm, crm_id): at for crm, crm_id, at in conn.execute(select(
            store.written_values.c.crm, store.written_values.c.crm_id, store.written_values.c.written_at))}
    for i in range(6):
        assert stored[("hubspot", str(i))] == stored[("salesforce", "utc" if i % 2 else "plus_one")]
    engine.dispose()


def test_the_audit_hash_from_values_equals_the_row_hash():
    """``audit_hash`` (what ``AuditLog`` computes, reasons encoded once per lead and spliced in)
    and ``audit_row_hash`` (what verify computes from a stored row) give the chain's hash as first
    defined: SHA-256 of the canonical JSON array of every value, for odd values too."""
    import hashlib
    import json

    from hypothesis import given, settings, strategies as st

    def reference(prev: str, row: dict) -> str:
        text = json.dumps([prev, row["crm"], int(row["seq"]), store.canonical_time(row["at"]), row["run_id"],
                           row["flow"], row["crm_id"], row["action"], row["field"], row["old_value"],
                           row["new_value"], row["model_version"], row["reasons"], int(bool(row["dry_run"]))],
                          ensure_ascii=False, separators=(",", ":"), sort_keys=True)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    text = st.one_of(st.none(), st.text(max_size=30))

    @settings(max_examples=300, deadline=None)
    @given(seq=st.integers(1, 10**12), values=st.lists(text, min_size=6, max_size=6),
           reasons=st.one_of(st.none(), st.lists(st.text(max_size=40), max_size=5)), dry_run=st.booleans(),
           at=st.datetimes(timezones=st.just(timezone.utc)))
    def check(seq, values, reasons, dry_run, at):
        field, old, new, model, crm_id, run_id = values
        row = {"crm": "hubspot", "seq": seq, "at": at, "run_id": run_id or "r", "flow": "sync_leads",
               "crm_id": crm_id or "1", "action": "field_set", "field": field, "old_value": old, "new_value": new,
               "model_version": model, "reasons": reasons, "dry_run": int(dry_run)}
        expected = reference("a" * 64, row)
        assert store.audit_row_hash("a" * 64, row) == expected
        assert store.audit_hash("a" * 64, row["crm"], seq, store.canonical_time(at), row["run_id"], row["flow"],
                                row["crm_id"], row["action"], field, old, new, model,
                                store.canonical_reasons(reasons), row["dry_run"]) == expected

    check()
