"""The Prefect flows end to end: the shared Prefect test server, the sandbox over HTTP, and the real
HubSpot and Salesforce clients reading back what the flows wrote."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from hubspot.crm.contacts import BatchReadInputSimplePublicObjectId, SimplePublicObjectId

from state import leads as state
from connectors.crm.factory import connector_from_env
from connectors.crm.setup import hubspot_setup
from state.audit import read_audit
from sandbox.environment import environment, sandbox_environment
from flows.sync import backfill, sync_leads
from state.schema import make_engine
from sandbox import start_sandbox

pytestmark = pytest.mark.prefect

LEADS = 60


@pytest.fixture(scope="module")
def sandbox():
    with start_sandbox(LEADS, random_seed=11) as handle:
        yield handle


def _run_env(handle, database_url: str, home: Path) -> dict[str, str]:
    return {**sandbox_environment(handle), "LEADFLOW_DATABASE_URL": database_url, "LEADFLOW_HOME": str(home)}


@pytest.fixture(scope="module")
def hubspot_env(sandbox, tmp_path_factory):
    folder = tmp_path_factory.mktemp("hubspot-run")
    env = _run_env(sandbox, f"sqlite:///{folder / 'state.db'}", folder)
    with environment(env):
        hubspot_setup(connector_from_env("hubspot"))
        yield env


def _contacts(handle, ids: list[str], props: list[str]) -> dict[str, dict]:
    client = handle.hubspot_client()
    body = BatchReadInputSimplePublicObjectId(inputs=[SimplePublicObjectId(id=i) for i in ids], properties=props)
    return {r.id: r.properties for r in client.crm.contacts.batch_api.read(body).results}


def _hubspot_tasks(handle) -> list[dict]:
    """Tasks leadflow created (the seed also has tasks sales created by hand)."""
    tasks = handle.dump_state(api="hubspot", object="tasks")["hubspot"]["tasks"]
    return [t for t in tasks if t["properties"].get("leadflow_task_key")]


def test_dry_run_writes_nothing_and_keeps_the_watermark(prefect_server, sandbox, hubspot_env):
    before = sandbox.dump_state(api="hubspot", object="contacts")["hubspot"]["contacts"]
    summary = sync_leads("hubspot", dry_run=True)
    assert summary["dry_run"] and summary["read"] == LEADS and summary["changed"] > 0
    after = sandbox.dump_state(api="hubspot", object="contacts")["hubspot"]["contacts"]
    assert after == before
    assert _hubspot_tasks(sandbox) == []
    engine = make_engine(hubspot_env["LEADFLOW_DATABASE_URL"])
    assert state.get_watermark(engine, "hubspot", "contacts") is None
    rows = list(csv.DictReader(open(summary["preview_path"])))
    assert len(rows) == LEADS and all(r["stage_after"] and r["lead_score"] for r in rows)
    changed = {c.split(":", 1)[0] for r in rows for c in r["changes"].split(" | ") if c}
    assert changed >= {"leadflow_lead_score", "leadflow_stage"}
    audit = read_audit(engine, run_id=summary["run_id"])
    assert audit and all(row["dry_run"] == 1 for row in audit)


def test_sync_writes_fields_and_tasks_and_a_rerun_changes_nothing(prefect_server, sandbox, hubspot_env):
    first = sync_leads("hubspot")
    assert first["read"] == LEADS and first["changed"] > 0 and first["failed"] == 0
    assert first["tasks_created"] > 0

    engine = make_engine(hubspot_env["LEADFLOW_DATABASE_URL"])
    audit = read_audit(engine, run_id=first["run_id"], limit=100_000)
    stage_moves = {row["crm_id"]: row["new_value"] for row in audit if row["action"] == "stage_move"}
    assert stage_moves
    written = _contacts(sandbox, list(stage_moves), ["leadflow_stage", "leadflow_lead_score", "leadflow_reasons"])
    for crm_id, stage in stage_moves.items():
        assert written[crm_id]["leadflow_stage"] == stage
        assert 0 <= int(float(written[crm_id]["leadflow_lead_score"])) <= 100
        assert 0 < len(written[crm_id]["leadflow_reasons"]) <= 255

    tasks = _hubspot_tasks(sandbox)
    keys = [t["properties"].get("leadflow_task_key") for t in tasks]
    assert len(tasks) == first["tasks_created"] and len(set(keys)) == len(keys)
    assert all(t.get("associations", {}).get("contacts") for t in tasks)

    second = sync_leads("hubspot")
    assert second["changed"] == 0 and second["tasks_created"] == 0 and second["failed"] == 0
    assert len(_hubspot_tasks(sandbox)) == len(tasks)
    assert state.get_watermark(engine, "hubspot", "contacts") is not None


def test_salesforce_round_trip_and_backfill_leaves_the_watermark(prefect_server, sandbox, tmp_path):
    with environment(_run_env(sandbox, f"sqlite:///{tmp_path / 'sf.db'}", tmp_path)):
        first = sync_leads("salesforce")
        assert first["read"] == LEADS and first["changed"] > 0 and first["failed"] == 0
        sf = sandbox.salesforce_client()
        leads = sf.query("SELECT Id, Lead_Stage__c, Lead_Score__c, Score_Model_Version__c FROM Lead")["records"]
        assert all(lead["Lead_Stage__c"] and lead["Score_Model_Version__c"] for lead in leads)
        tasks = sf.query("SELECT Id, WhoId FROM Task WHERE Leadflow_Task_Key__c != null")["records"]
        assert len(tasks) == first["tasks_created"] > 0
        assert {t["WhoId"] for t in tasks} <= {lead["Id"] for lead in leads}

        engine = make_engine(f"sqlite:///{tmp_path / 'sf.db'}")
        mark = state.get_watermark(engine, "salesforce", "Lead")
        from datetime import datetime, timedelta, timezone

        window_end = datetime.now(timezone.utc)
        again = backfill("salesforce", since=window_end - timedelta(days=800), until=window_end)
        assert again["changed"] == 0 and again["tasks_created"] == 0
        assert state.get_watermark(engine, "salesforce", "Lead") == mark


def test_a_bad_lead_is_quarantined_and_a_failed_write_is_retried_next_run(prefect_server, tmp_path):
    with start_sandbox(20, random_seed=5) as handle, \
            environment(_run_env(handle, f"sqlite:///{tmp_path / 'q.db'}", tmp_path)):
        hubspot_setup(connector_from_env("hubspot"))
        contacts = handle.dump_state(api="hubspot", object="contacts")["hubspot"]["contacts"]
        bad, failing = contacts[0]["id"], contacts[1]["id"]
        handle.state.hubspot.write("contacts", bad, {"leadflow_lead_score": "140"})
        handle.set_faults(f"hubspot.contacts.batch_update:record_error=VALIDATION_ERROR,ids={failing}")

        first = sync_leads("hubspot")
        assert first["quarantined"] == 1 and first["failed"] == 1
        assert first["changed"] >= 18  # everyone else landed
        engine = make_engine(f"sqlite:///{tmp_path / 'q.db'}")
        pending = state.pending_details(engine, "hubspot")
        assert pending[bad]["kind"] == "quarantined" and "leadflow_lead_score" in pending[bad]["reason"]
        assert pending[bad]["reason"].startswith(f"hubspot:{bad}")
        assert pending[failing]["kind"] == "write_failed"
        assert _contacts(handle, [failing], ["leadflow_stage"])[failing]["leadflow_stage"] in (None, "")

        handle.set_faults(None)
        second = sync_leads("hubspot")
        assert second["retried_pending"] >= 1
        assert _contacts(handle, [failing], ["leadflow_stage"])[failing]["leadflow_stage"]
        assert failing not in state.pending_details(engine, "hubspot")
        actions = {row["action"] for row in read_audit(engine, crm_id=bad)}
        assert "quarantined" in actions


@pytest.mark.postgres
def test_audit_and_state_on_postgresql(prefect_server, postgres_url, tmp_path):
    with start_sandbox(15, random_seed=3) as handle, environment(_run_env(handle, postgres_url, tmp_path)):
        summary = sync_leads("salesforce")
        engine = make_engine(postgres_url)
        rows = read_audit(engine, run_id=summary["run_id"], limit=10_000)
        assert summary["changed"] > 0 and len(rows) >= summary["changed"]
        assert {"field_set", "stage_move"} <= {row["action"] for row in rows}
        assert state.get_watermark(engine, "salesforce", "Lead") is not None
        engine.dispose()


def test_enriched_fields_are_audited_with_their_source(prefect_server, sandbox, hubspot_env):
    engine = make_engine(hubspot_env["LEADFLOW_DATABASE_URL"])
    rows = read_audit(engine, crm="hubspot", limit=100_000)
    enriched = [r for r in rows if r["field"] in ("company.leadflow_org_type", "company.leadflow_specialty")
                and not r["dry_run"]]
    assert enriched, "the seeded organizations found in the NPPES stand-in had their type written"
    # NPPES for providers; the CRM's own industry value for the rest (payers, pharma, digital health)
    sources = ("enriched by nppes (confidence ", "enriched by crm_industry (confidence ")
    assert all(r["reasons"][0].startswith(sources) for r in enriched)
    from_industry = [r for r in enriched if r["reasons"][0].startswith(sources[1])]
    assert any(r["reasons"][0].startswith(sources[0]) for r in enriched) and from_industry
    assert all(r["field"] == "company.leadflow_org_type" and ", crm_industry:industry:" in r["reasons"][0]
               for r in from_industry)


def test_a_stage_change_closes_the_superseded_task(prefect_server, sandbox, hubspot_env):
    from hubspot.crm.contacts import SimplePublicObjectInput

    tasks = _hubspot_tasks(sandbox)
    mql_task = next(t for t in tasks if ":mql:" in t["properties"]["leadflow_task_key"]
                    and t["properties"].get("hs_task_status") != "COMPLETED")
    crm_id = mql_task["properties"]["leadflow_task_key"].split(":", 1)[0]
    sandbox.hubspot_client().crm.contacts.basic_api.update(
        crm_id, SimplePublicObjectInput(properties={"leadflow_manual_stage": "disqualified"}))

    summary = sync_leads("hubspot")
    assert summary["tasks_closed"] >= 1
    closed = next(t for t in _hubspot_tasks(sandbox) if t["id"] == mql_task["id"])
    assert closed["properties"]["hs_task_status"] == "COMPLETED"
    assert _contacts(sandbox, [crm_id], ["leadflow_stage"])[crm_id]["leadflow_stage"] == "disqualified"


def test_a_run_stopped_between_write_and_tasks_finishes_them_next_run(prefect_server, tmp_path):
    """Salesforce with skip_own_writes: the leads a stopped run already wrote are no longer in any
    window read (LastModifiedById is leadflow's user), so only their in-progress mark brings them
    back; their tasks are then created, once."""
    env_extra = {"LEADFLOW_SALESFORCE_SKIP_OWN_WRITES": "1"}
    with start_sandbox(20, random_seed=5) as handle, \
            environment({**_run_env(handle, f"sqlite:///{tmp_path / 'p.db'}", tmp_path), **env_extra}):
        handle.set_faults("salesforce.composite.upsert:status=403")  # daily quota gone at the task upsert
        first = sync_leads("salesforce")
        assert first["stopped_early"] and first["tasks_created"] == 0
        engine = make_engine(f"sqlite:///{tmp_path / 'p.db'}")
        pending = state.pending_details(engine, "salesforce")
        sf = handle.salesforce_client()
        written = {r["Id"] for r in sf.query("SELECT Id FROM Lead WHERE Lead_Stage__c != null")["records"]}
        waiting = set(pending)  # written, but their next-step task is not in the CRM yet
        assert waiting and waiting <= written
        assert {row["kind"] for row in pending.values()} == {"in_progress"}
        assert state.get_watermark(engine, "salesforce", "Lead") is None

        handle.set_faults(None)
        second = sync_leads("salesforce")
        assert second["stopped_early"] is None and second["retried_pending"] >= len(waiting)
        tasks = sf.query("SELECT WhoId, Leadflow_Task_Key__c FROM Task WHERE Leadflow_Task_Key__c != null")["records"]
        assert tasks and len({t["Leadflow_Task_Key__c"] for t in tasks}) == len(tasks)
        assert waiting <= {t["WhoId"] for t in tasks}
        assert state.pending_details(engine, "salesforce") == {}
        third = sync_leads("salesforce")
        assert third["read"] == 0 and third["tasks_created"] == 0


def test_tasks_are_sent_in_whole_batches_across_pages_and_none_is_lost(tmp_path):
    """TaskCarry: each page sends whole batches (its tasks plus those held), the run's end sends
    the rest; every planned task is created once, and no lead is left pending."""
    from flows.pipeline import TaskCarry, process_page, send_held_tasks
    from flows.sync import _context

    with start_sandbox(60, random_seed=7) as handle, \
            environment(_run_env(handle, f"sqlite:///{tmp_path / 'c.db'}", tmp_path)):
        engine = make_engine(f"sqlite:///{tmp_path / 'c.db'}")
        ctx = _context("salesforce", "sync_leads", "run-carry", False, engine)
        ctx.connector.config.page_size = 7
        ctx.task_carry = TaskCarry(5)
        sent: list[int] = []
        ensure = ctx.connector.ensure_tasks
        ctx.connector.ensure_tasks = lambda tasks, supersede: (sent.append(len(tasks)), ensure(tasks, supersede))[1]
        pages = [process_page(ctx, page) for page in ctx.connector.iter_pages(None, None)]
        assert len(pages) >= 8 and all(n % 5 == 0 for n in sent)
        last = send_held_tasks(ctx)
        created = sum(p.tasks_created for p in pages) + last.tasks_created
        tasks = handle.salesforce_client().query(
            "SELECT WhoId, Leadflow_Task_Key__c FROM Task WHERE Leadflow_Task_Key__c != null")["records"]
        assert created == len(tasks) == len({t["Leadflow_Task_Key__c"] for t in tasks}) > 5
        assert 0 < last.tasks_created < 5 or created % 5 == 0
        assert state.pending_details(engine, "salesforce") == {}
        created_rows = [r for r in read_audit(engine, run_id="run-carry", limit=10_000) if r["action"] == "task_created"]
        assert len(created_rows) == created
        engine.dispose()


def test_a_partition_leaves_pending_leads_to_a_run_that_holds_the_crm_alone(prefect_server, tmp_path):
    """Sibling partitions run at once, so another partition's leads in progress look pending:
    a partition must not take them (it would write them twice); the next plain run does."""
    from datetime import datetime, timedelta, timezone

    from state.locks import acquire, release

    url = f"sqlite:///{tmp_path / 'part.db'}"
    with start_sandbox(10, random_seed=9) as handle, environment(_run_env(handle, url, tmp_path)):
        hubspot_setup(connector_from_env("hubspot"))
        engine = make_engine(url)
        sibling_lead = handle.dump_state(api="hubspot", object="contacts")["hubspot"]["contacts"][0]["id"]
        state.mark_in_progress(engine, "hubspot", [sibling_lead])
        acquire(engine, "hubspot", "parent-run")
        now = datetime.now(timezone.utc)
        partition = backfill("hubspot", since=now - timedelta(days=1), until=now - timedelta(hours=23),
                             parent_run_id="parent-run")
        assert partition["retried_pending"] == 0 and sibling_lead in state.pending_details(engine, "hubspot")
        release(engine, "hubspot", "parent-run")
        alone = sync_leads("hubspot")
        assert alone["retried_pending"] == 1 and state.pending_details(engine, "hubspot") == {}
        engine.dispose()
