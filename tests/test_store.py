from datetime import datetime, timezone

from sqlalchemy import insert, select

from leadflow import store


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
