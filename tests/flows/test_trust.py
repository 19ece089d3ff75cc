"""Writes sales can trust, through the real pipeline and the real clients against the sandbox: a
rep's edit made while a run is in flight survives, no lead is forgotten, every CRM change has its
audit row whatever the moment the run dies, and no patient text or credential leaks anywhere."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import pytest
from hubspot.crm.contacts import BatchReadInputSimplePublicObjectId, SimplePublicObjectId, SimplePublicObjectInput

from state import leads as state
from connectors.crm.setup import hubspot_setup
from connectors.crm.factory import connector_from_env
from flows import pipeline
from state.audit import read_audit
from sandbox.environment import environment, sandbox_environment
from flows.sync import sync_leads
from state.schema import make_engine
from sandbox import start_sandbox

pytestmark = pytest.mark.prefect

REP_NEXT_STEP = "Rep: call after the board meeting"


def _env(handle, tmp_path: Path, name: str, **extra: str) -> dict[str, str]:
    return {**sandbox_environment(handle), "LEADFLOW_DATABASE_URL": f"sqlite:///{tmp_path / name}",
            "LEADFLOW_HOME": str(tmp_path), **extra}


def _contacts(handle, ids: list[str], props: list[str]) -> dict[str, dict]:
    client = handle.hubspot_client()
    body = BatchReadInputSimplePublicObjectId(inputs=[SimplePublicObjectId(id=i) for i in ids], properties=props)
    return {r.id: r.properties for r in client.crm.contacts.batch_api.read(body).results}


def _edit_during_the_run(monkeypatch, edit) -> None:
    """Call ``edit`` once, after the first page was read and before anything of it is written."""
    original = pipeline._enrich
    done: list[bool] = []

    def enrich_then_edit(ctx, leads):
        if not done:
            done.append(True)
            edit()
        return original(ctx, leads)

    monkeypatch.setattr(pipeline, "_enrich", enrich_then_edit)


def test_a_hubspot_rep_edit_made_during_the_run_survives_it_and_the_next_run(prefect_server, tmp_path, monkeypatch):
    with start_sandbox(20, random_seed=5) as handle, environment(_env(handle, tmp_path, "h.db")):
        hubspot_setup(connector_from_env("hubspot"))
        contacts = handle.dump_state(api="hubspot", object="contacts")["hubspot"]["contacts"]
        edited = [c["id"] for c in contacts if c["properties"].get("leadflow_lead_kind") != "patient"][:4]
        client = handle.hubspot_client()

        def rep_edits():
            for crm_id in edited:
                client.crm.contacts.basic_api.update(crm_id, SimplePublicObjectInput(
                    properties={"leadflow_stage": "sal", "leadflow_next_step": REP_NEXT_STEP}))

        _edit_during_the_run(monkeypatch, rep_edits)
        first = sync_leads("hubspot")
        assert first["kept_manual"] >= 2 * len(edited) and first["failed"] == 0
        props = ["leadflow_stage", "leadflow_next_step", "leadflow_lead_score"]
        after = _contacts(handle, edited, props)
        assert all(after[i]["leadflow_stage"] == "sal" and after[i]["leadflow_next_step"] == REP_NEXT_STEP
                   for i in edited)
        assert all(after[i]["leadflow_lead_score"] for i in edited)  # leadflow's own fields still landed
        keys = [t["properties"].get("leadflow_task_key") or ""
                for t in handle.dump_state(api="hubspot", object="tasks")["hubspot"]["tasks"]]
        assert not [k for k in keys if k.split(":", 1)[0] in edited]  # no task for a stage sales changed

        engine = make_engine(_env(handle, tmp_path, "h.db")["LEADFLOW_DATABASE_URL"])
        kept = [r for r in read_audit(engine, run_id=first["run_id"], limit=10_000) if r["action"] == "kept_manual_edit"]
        assert {r["crm_id"] for r in kept} == set(edited)
        assert {r["new_value"] for r in kept if r["field"] == "leadflow_stage"} == {"sal"}

        monkeypatch.undo()
        second = sync_leads("hubspot")
        assert second["failed"] == 0
        again = _contacts(handle, edited, props)
        assert all(again[i]["leadflow_stage"] == "sal" and again[i]["leadflow_next_step"] == REP_NEXT_STEP
                   for i in edited)


def test_a_salesforce_rep_edit_made_during_the_run_survives_it_and_the_next_run(prefect_server, tmp_path,
                                                                                 monkeypatch):
    with start_sandbox(20, random_seed=6) as handle, environment(_env(handle, tmp_path, "s.db")):
        integration = handle.salesforce_client()
        leads = integration.query("SELECT Id, Lead_Kind__c FROM Lead ORDER BY Id")["records"]
        edited = [r["Id"] for r in leads if r["Lead_Kind__c"] != "Patient"][:4]
        rep = handle.salesforce_client(user="rep")

        def rep_edits():
            for crm_id in edited:
                rep.Lead.update(crm_id, {"Lead_Stage__c": "SAL", "Next_Step__c": REP_NEXT_STEP})

        _edit_during_the_run(monkeypatch, rep_edits)
        first = sync_leads("salesforce")
        assert first["kept_manual"] >= 2 * len(edited) and first["failed"] == 0
        soql = "SELECT Id, Lead_Stage__c, Next_Step__c, Lead_Score__c FROM Lead WHERE Id IN ('{}')"
        rows = integration.query(soql.format("','".join(edited)))["records"]
        assert all(r["Lead_Stage__c"] == "SAL" and r["Next_Step__c"] == REP_NEXT_STEP and r["Lead_Score__c"] is not None
                   for r in rows)
        tasks = integration.query("SELECT WhoId FROM Task WHERE Leadflow_Task_Key__c != null")["records"]
        assert not {t["WhoId"] for t in tasks} & set(edited)

        monkeypatch.undo()
        assert sync_leads("salesforce")["failed"] == 0
        rows = integration.query(soql.format("','".join(edited)))["records"]
        assert all(r["Lead_Stage__c"] == "SAL" and r["Next_Step__c"] == REP_NEXT_STEP for r in rows)


def test_a_failed_field_write_keeps_its_lead_pending_though_its_task_was_held(prefect_server, tmp_path):
    """Tasks are held across pages and sent at the run's end; a lead whose field write failed must
    not get its task then (which used to clear it from pending): fields and task come next run."""
    with start_sandbox(20, random_seed=5) as handle, environment(_env(handle, tmp_path, "f.db")):
        sf = handle.salesforce_client()
        failing = [r["Id"] for r in sf.query("SELECT Id FROM Lead ORDER BY Id")["records"]][:6]
        handle.set_faults("salesforce.composite.update:record_error=FIELD_CUSTOM_VALIDATION_EXCEPTION,"
                          f"ids={'|'.join(failing)}")
        first = sync_leads("salesforce")
        assert first["failed"] == len(failing)
        assert {r["crm_id"] for r in first["rejected"] if r["kind"] == "write_failed"} == set(failing)
        engine = make_engine(_env(handle, tmp_path, "f.db")["LEADFLOW_DATABASE_URL"])
        pending = state.pending_details(engine, "salesforce")
        assert {i for i, row in pending.items() if row["kind"] == "write_failed"} == set(failing)
        tasks = sf.query("SELECT WhoId FROM Task WHERE Leadflow_Task_Key__c != null")["records"]
        assert not {t["WhoId"] for t in tasks} & set(failing)

        handle.set_faults(None)
        second = sync_leads("salesforce")
        assert second["failed"] == 0 and second["retried_pending"] >= len(failing)
        stages = sf.query("SELECT Id, Lead_Stage__c FROM Lead WHERE Id IN ('{}')".format("','".join(failing)))
        assert all(r["Lead_Stage__c"] for r in stages["records"])
        assert state.pending_details(engine, "salesforce") == {}, [
            (r["kind"], r["reason"]) for r in state.pending_details(engine, "salesforce").values()]
        tasks = sf.query("SELECT Leadflow_Task_Key__c FROM Task WHERE Leadflow_Task_Key__c != null")["records"]
        keys = [t["Leadflow_Task_Key__c"] for t in tasks]
        assert len(keys) == len(set(keys))


def test_a_lead_retried_by_id_is_not_processed_again_by_the_window_read(prefect_server, tmp_path):
    """A full read (rescore: HubSpot's list endpoint, no skipping) returns the leads the run already
    retried by id: each is processed once - counted once, one outcome row, no second task request."""
    from flows.sync import rescore

    with start_sandbox(20, random_seed=5) as handle, environment(_env(handle, tmp_path, "r.db")):
        hubspot_setup(connector_from_env("hubspot"))
        engine = make_engine(_env(handle, tmp_path, "r.db")["LEADFLOW_DATABASE_URL"])
        assert sync_leads("hubspot")["failed"] == 0
        ids = [c["id"] for c in handle.dump_state(api="hubspot", object="contacts")["hubspot"]["contacts"]]
        state.mark_pending(engine, "hubspot", {i: "hubspot: earlier failure" for i in ids}, kind="write_failed")
        summary = rescore("hubspot")
        assert summary["retried_pending"] == len(ids)
        assert sum(summary["stages"].values()) == len(ids) and summary["read"] == len(ids)  # each counted once
        rows = read_audit(engine, run_id=summary["run_id"], limit=10_000)
        for action in ("task_requested", "task_created", "write_applied", "stage_move"):
            per_lead = [r["crm_id"] for r in rows if r["action"] == action]
            assert len(per_lead) == len(set(per_lead)), action
        assert state.pending_details(engine, "hubspot") == {}


class _Died(BaseException):
    """The process dying right after the CRM answered (a SIGKILL stand-in that no handler catches)."""


def test_every_crm_change_is_audited_even_when_the_run_dies_right_after_the_write(tmp_path):
    from flows.sync import _context

    with start_sandbox(30, random_seed=8) as handle, environment(_env(handle, tmp_path, "a.db")):
        engine = make_engine(_env(handle, tmp_path, "a.db")["LEADFLOW_DATABASE_URL"])
        ctx = _context("salesforce", "sync_leads", "run-dies", False, engine)
        ctx.task_carry = None
        write = ctx.connector.write_updates

        def write_then_die(updates):
            write(updates)
            raise _Died()

        ctx.connector.write_updates = write_then_die
        page = next(iter(ctx.connector.iter_pages(None, None)))
        with pytest.raises(_Died):
            pipeline.process_page(ctx, page)

        fields = ("Lead_Stage__c", "Lead_Score__c", "Next_Step__c")
        leads = handle.salesforce_client().query(f"SELECT Id, {', '.join(fields)} FROM Lead")["records"]
        audit = read_audit(engine, run_id="run-dies", limit=10_000)
        audited = {(r["crm_id"], r["field"]): r["new_value"] for r in audit if r["action"] in ("field_set", "stage_move")}
        changed = [(lead["Id"], f) for lead in leads for f in fields if lead[f] not in (None, "")]
        assert changed and all((crm_id, f) in audited for crm_id, f in changed)
        assert not [r for r in audit if r["action"] == "write_applied"]  # its outcome was never known
        assert set(state.pending_details(engine, "salesforce")) >= {crm_id for crm_id, _ in changed}


SENTINEL_TEXT = "SENTINEL-PATIENT-TEXT chest pain since my chemo, call my daughter"


def test_no_patient_text_and_no_credential_reaches_logs_previews_artifacts_pending_rows_or_audit(
        prefect_server, tmp_path, caplog):
    from prefect.client.orchestration import get_client

    from sandbox.app import Credentials

    credentials = Credentials(hubspot_token="SENTINEL-TOKEN-hubspot-5d1f", password="SENTINEL-PASSWORD-9c2e",
                              security_token="SENTINEL-SECTOKEN-77aa", client_secret="SENTINEL-SECRET-41b0",
                              session_id="SENTINEL-SESSION-e3f1")
    with start_sandbox(20, random_seed=5, credentials=credentials) as handle, \
            environment(_env(handle, tmp_path, "p.db")):
        hubspot_setup(connector_from_env("hubspot"))
        contacts = handle.dump_state(api="hubspot", object="contacts")["hubspot"]["contacts"]
        patients = [c["id"] for c in contacts][:3]
        hubspot = handle.state.hubspot  # as another integration or an import could leave them
        hubspot.write("contacts", patients[0], {"leadflow_lead_kind": "patient", "pain_point": SENTINEL_TEXT,
                                                "patient_service_requested": SENTINEL_TEXT})
        hubspot.write("contacts", patients[1], {"leadflow_lead_kind": "patient",
                                                "patient_scheduling_ready": SENTINEL_TEXT})  # not true/false
        hubspot.write("contacts", patients[2], {"leadflow_lead_kind": SENTINEL_TEXT,
                                                "leadflow_lead_score": SENTINEL_TEXT})  # not a number
        sf = handle.salesforce_client()
        sf_lead = sf.query("SELECT Id FROM Lead ORDER BY Id LIMIT 1")["records"][0]["Id"]
        from sandbox.store import now_ms

        handle.state.salesforce.tables["Lead"].update(sf_lead, {
            "Lead_Kind__c": "Patient", "Pain_Point__c": SENTINEL_TEXT, "Patient_Scheduling_Ready__c": SENTINEL_TEXT},
            now_ms())

        caplog.set_level(logging.DEBUG)
        runs = [sync_leads(crm, dry_run=dry) for crm in ("hubspot", "salesforce") for dry in (True, False)]
        assert sum(r["quarantined"] for r in runs if not r["dry_run"]) >= 2

        forbidden = [SENTINEL_TEXT, "SENTINEL-PATIENT", "SENTINEL-TOKEN", "SENTINEL-PASSWORD", "SENTINEL-SECTOKEN",
                     "SENTINEL-SECRET", "SENTINEL-SESSION"]
        engine = make_engine(_env(handle, tmp_path, "p.db")["LEADFLOW_DATABASE_URL"])
        places = {
            "logs": caplog.text,
            "summaries": json.dumps(runs, default=str),
            "audit": json.dumps(read_audit(engine, limit=100_000), default=str),
            "pending": json.dumps(state.pending_details(engine, "hubspot"), default=str)
                       + json.dumps(state.pending_details(engine, "salesforce"), default=str),
            "previews": "".join(Path(r["preview_path"]).read_text() for r in runs if r["preview_path"]),
        }
        with get_client(sync_client=True) as prefect:
            places["artifacts"] = json.dumps([a.data for a in prefect.read_artifacts()], default=str)
            places["prefect logs"] = json.dumps([log.message for log in prefect.read_logs()], default=str)
        for place, text in places.items():
            for token in forbidden:
                assert token not in text, f"{token[:12]}... found in {place}"
        reasons = [row["reason"] for row in state.pending_details(engine, "hubspot").values()]
        assert any("expected true/false, got text of" in r for r in reasons)


def test_a_dry_run_previews_exactly_what_the_real_run_then_does(prefect_server, tmp_path, monkeypatch):
    """On an empty state store against a CRM that already holds leadflow's fields and tasks: the
    preview's changes and tasks equal the real run's, lead by lead (no phantom tasks)."""
    from datetime import datetime, timezone

    from flows import sync

    with start_sandbox(30, random_seed=12) as handle:
        with environment(_env(handle, tmp_path, "before.db")):
            hubspot_setup(connector_from_env("hubspot"))
            assert sync_leads("hubspot")["tasks_created"] > 0
        handle.state.hubspot.write("contacts", handle.dump_state(api="hubspot", object="contacts")
                                   ["hubspot"]["contacts"][0]["id"], {"jobtitle": "Chief Medical Officer"})
        frozen = datetime.now(timezone.utc)  # both runs score at the same moment
        monkeypatch.setattr(sync, "_now", lambda: frozen)
        with environment(_env(handle, tmp_path, "fresh.db")):
            preview = sync_leads("hubspot", dry_run=True)
            real = sync_leads("hubspot")
        rows = list(csv.DictReader(open(preview["preview_path"])))
        previewed = {r["crm_id"]: sorted(_field_and_new(c) for c in r["changes"].split(" | ") if c) for r in rows}
        previewed = {k: v for k, v in previewed.items() if v}
        engine = make_engine(_env(handle, tmp_path, "fresh.db")["LEADFLOW_DATABASE_URL"])
        done: dict[str, list[str]] = {}
        for r in read_audit(engine, run_id=real["run_id"], limit=100_000):
            if r["action"] in ("field_set", "stage_move"):
                done.setdefault(r["crm_id"], []).append(f"{r['field']}={r['new_value'] if r['new_value'] not in (None, '') else '(blank)'}")
        assert {k: sorted(v) for k, v in done.items()} == previewed
        assert preview["tasks_created"] == real["tasks_created"]
        assert {r["crm_id"] for r in rows if r["task"]} == {
            r["crm_id"] for r in read_audit(engine, run_id=real["run_id"], limit=100_000) if r["action"] == "task_created"}


def _field_and_new(change: str) -> str:
    """``field: old -> new`` as ``field=new``."""
    field, values = change.split(": ", 1)
    return f"{field}={values.rsplit(' -> ', 1)[1]}"
