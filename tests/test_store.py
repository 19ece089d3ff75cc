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
