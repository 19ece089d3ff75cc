"""Native stages (``native_stages`` in mappings/*.yaml) through the real pipeline, the real client
libraries and the sandbox: leadflow's stage lands in HubSpot's lifecycle stage and Salesforce's
Lead Status, a rep's ordinary status change is what the next run obeys, a backward lifecycle move
clears then sets (two batches, both audited) and never fights a stage sales owns; with the switch
off, leadflow touches only its own fields."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from hubspot.crm.contacts import SimplePublicObjectInput

from connectors.crm.factory import connector_from_env
from connectors.crm.setup import hubspot_setup
from flows import pipeline
from flows.demo import environment, sandbox_environment
from flows.pipeline import PageResult, process_page, send_held_tasks
from flows.sync import _context
from mappings import MAPPINGS_DIR
from sandbox import start_sandbox
from state import leads as state
from state.audit import read_audit
from state.schema import make_engine

ENGAGED = ("demo_requested_at", "last_pricing_page_view_at")  # HubSpot event properties (signals: fields)
SF_ENGAGED = ("Demo_Requested_At__c", "Last_Pricing_View_At__c")


def _mapping(tmp_path: Path, crm: str, native: bool, edits: tuple[tuple[str, str], ...] = ()) -> Path:
    """The shipped mapping with native stages on or off; engagement read from event date fields,
    so that a test makes a lead an MQL by recording a demo request."""
    text = (MAPPINGS_DIR / f"{crm}.yaml").read_text().replace("signals: native", "signals: fields")
    for old, new in edits:
        assert old in text
        text = text.replace(old, new)
    if native:
        assert "native_stages:\n  enabled: false" in text
        text = text.replace("native_stages:\n  enabled: false", "native_stages:\n  enabled: true")
    path = tmp_path / f"{crm}-{'native' if native else 'own'}.yaml"
    path.write_text(text)
    return path


class Runner:
    """Runs of one CRM against one sandbox and one state store, the mapping chosen per run."""

    def __init__(self, handle: Any, tmp_path: Path, crm: str, edits: tuple[tuple[str, str], ...] = ()):
        self.handle, self.tmp_path, self.crm, self.edits = handle, tmp_path, crm, edits
        self.url = f"sqlite:///{tmp_path / f'{crm}.db'}"
        self.engine = make_engine(self.url)
        self.runs = 0

    def env(self, native: bool) -> dict[str, str]:
        return {**sandbox_environment(self.handle), "LEADFLOW_DATABASE_URL": self.url,
                "LEADFLOW_HOME": str(self.tmp_path),
                f"LEADFLOW_MAPPING_{self.crm.upper()}": str(_mapping(self.tmp_path, self.crm, native, self.edits))}

    def run(self, native: bool) -> tuple[str, list[PageResult]]:
        self.runs += 1
        run_id = f"{self.crm}-run-{self.runs}"
        with environment(self.env(native)):
            if self.crm == "hubspot" and self.runs == 1:
                hubspot_setup(connector_from_env("hubspot"))
            ctx = _context(self.crm, "sync_leads", run_id, False, self.engine)
            results = [process_page(ctx, page) for page in ctx.connector.iter_pages(None, None)]
            results.append(send_held_tasks(ctx))
        return run_id, results

    def audit(self, run_id: str, crm_id: str | None = None) -> list[dict[str, Any]]:
        rows = read_audit(self.engine, run_id=run_id, limit=100_000)
        return [r for r in rows if crm_id is None or r["crm_id"] == crm_id]


def _now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _contacts(handle: Any) -> dict[str, dict[str, Any]]:
    return handle.state.hubspot.tables["contacts"].records


def _sf_leads(handle: Any) -> dict[str, dict[str, Any]]:
    return handle.state.salesforce.tables["Lead"].records


def _hs_update(handle: Any, crm_id: str, **properties: str) -> None:
    handle.hubspot_client().crm.contacts.basic_api.update(crm_id, SimplePublicObjectInput(properties=properties))


def _actions(rows: list[dict[str, Any]]) -> list[str]:
    return [r["action"] for r in rows]


def _hubspot_mql(handle: Any, runner: Runner) -> str:
    """A contact leadflow staged nurture whose demo request and pricing visit (recorded by a
    workflow) make it an MQL on the next run."""
    nurture = [i for i, r in _contacts(handle).items()
               if r.get("leadflow_stage") == "nurture" and r.get("lifecyclestage") == "lead"
               and r.get("hs_lead_status") == "NEW" and not r.get("leadflow_manual_stage")
               and r.get("leadflow_sales_accepted") != "true"]
    assert nurture, "the seed has nurtured contacts at lifecycle stage lead"
    for crm_id in nurture:
        _hs_update(handle, crm_id, purchase_timeline="quarter", **{name: _now_iso() for name in ENGAGED})
    return nurture[0]


# --------------------------------------------------------------------------- HubSpot


def test_hubspot_native_stages_on_and_off(tmp_path):
    with start_sandbox(40, random_seed=2) as handle:
        runner = Runner(handle, tmp_path, "hubspot")
        before = {i: (r.get("lifecyclestage"), r.get("hs_lead_status")) for i, r in _contacts(handle).items()}
        run_id, _ = runner.run(native=False)
        # switch off: leadflow's own fields only; a rep's native status is not read
        assert {i: (r.get("lifecyclestage"), r.get("hs_lead_status")) for i, r in _contacts(handle).items()} == before
        assert not [r for r in runner.audit(run_id) if r["action"].startswith("native_stage")]
        accepted_natively = [i for i, r in _contacts(handle).items()
                             if r.get("hs_lead_status") in ("ATTEMPTED_TO_CONTACT", "CONNECTED", "IN_PROGRESS")
                             and r.get("leadflow_sales_accepted") != "true" and not r.get("leadflow_manual_stage")]
        assert accepted_natively and all(_contacts(handle)[i]["leadflow_stage"] != "sal" for i in accepted_natively)

        mql = _hubspot_mql(handle, runner)
        at_read = {i: r.get("lifecyclestage") for i, r in _contacts(handle).items()}
        run_id, _ = runner.run(native=True)
        contact = _contacts(handle)[mql]
        assert contact["leadflow_stage"] == "mql" and contact["lifecyclestage"] == "marketingqualifiedlead"
        # stages leadflow did not set (the seed's, a form's) are moved forward only, never back
        staged_back = [i for i, r in _contacts(handle).items() if r["leadflow_stage"] in ("nurture", "inquiry")
                       and at_read[i] in ("marketingqualifiedlead", "salesqualifiedlead")]
        assert staged_back and all(_contacts(handle)[i]["lifecyclestage"] == at_read[i] for i in staged_back)
        assert not [r for r in runner.audit(run_id) if r["action"] == "native_stage_clear"]
        moves = [r for r in runner.audit(run_id, mql) if r["action"] == "native_stage_move"]
        assert [(m["field"], m["old_value"], m["new_value"]) for m in moves] == \
            [("lifecyclestage", "lead", "marketingqualifiedlead")]
        assert _actions(runner.audit(run_id, mql)).index("native_stage_move") < \
            _actions(runner.audit(run_id, mql)).index("write_applied")

        # a rep works the lead: the ordinary status change is what the next run obeys
        _hs_update(handle, mql, hs_lead_status="IN_PROGRESS")
        run_id, _ = runner.run(native=True)
        contact = _contacts(handle)[mql]
        assert contact["leadflow_stage"] == "sal" and contact["lifecyclestage"] == "salesqualifiedlead"
        assert "native_stage_clear" not in _actions(runner.audit(run_id, mql))  # forward: one set

        # the switch off again: the same rep status means nothing to leadflow, which falls back
        _hs_update(handle, mql, hs_lead_status="CONNECTED")
        run_id, _ = runner.run(native=False)
        contact = _contacts(handle)[mql]
        assert contact["leadflow_stage"] != "sal" and contact["lifecyclestage"] == "salesqualifiedlead"
        assert not [r for r in runner.audit(run_id) if r["action"].startswith("native_stage")]
        runner.engine.dispose()


def test_a_backward_lifecycle_move_clears_then_sets_and_never_fights_sales(tmp_path):
    with start_sandbox(40, random_seed=2) as handle:
        runner = Runner(handle, tmp_path, "hubspot")
        runner.run(native=True)
        mql = _hubspot_mql(handle, runner)
        runner.run(native=True)
        assert _contacts(handle)[mql]["lifecyclestage"] == "marketingqualifiedlead"

        # the portal keeps a later lifecycle stage: a direct set back answers 200 and is ignored
        _hs_update(handle, mql, lifecyclestage="lead")
        assert _contacts(handle)[mql]["lifecyclestage"] == "marketingqualifiedlead"

        # a rep marks it bad timing: nurture by hand, so the lifecycle stage goes back to lead
        _hs_update(handle, mql, hs_lead_status="BAD_TIMING")
        handle.reset_stats()
        run_id, results = runner.run(native=True)
        contact = _contacts(handle)[mql]
        assert contact["leadflow_stage"] == "nurture" and contact["lifecyclestage"] == "lead"
        assert not any(r.failed for r in results)
        rows = runner.audit(run_id, mql)
        actions = _actions(rows)
        assert actions.index("native_stage_clear") < actions.index("native_stage_move") < actions.index("write_applied")
        clear = rows[actions.index("native_stage_clear")]
        move = rows[actions.index("native_stage_move")]
        assert (clear["field"], clear["old_value"], clear["new_value"]) == ("lifecyclestage", "marketingqualifiedlead", None)
        assert (move["field"], move["old_value"], move["new_value"]) == ("lifecyclestage", None, "lead")
        updates = [r for r in handle.requests(endpoint="hubspot.contacts.batch_update")]
        assert len(updates) == 2  # the clear alone, then the set: two batches

        # sales moves the contact on to opportunity; leadflow still sees nurture and leaves it there
        _hs_update(handle, mql, lifecyclestage="opportunity", purchase_timeline="later")
        run_id, _ = runner.run(native=True)
        assert mql in {r["crm_id"] for r in runner.audit(run_id)}  # re-read and processed
        assert _contacts(handle)[mql]["lifecyclestage"] == "opportunity"
        assert not [r for r in runner.audit(run_id, mql) if r["action"].startswith("native_stage")]
        runner.engine.dispose()


def test_the_sandbox_keeps_a_later_lifecycle_stage_until_it_is_cleared():
    with start_sandbox(5, random_seed=2) as handle:
        crm_id = next(i for i, r in _contacts(handle).items() if r.get("lifecyclestage") == "marketingqualifiedlead")
        _hs_update(handle, crm_id, lifecyclestage="lead")  # 200, and ignored
        assert _contacts(handle)[crm_id]["lifecyclestage"] == "marketingqualifiedlead"
        _hs_update(handle, crm_id, lifecyclestage="")
        _hs_update(handle, crm_id, lifecyclestage="lead")
        assert _contacts(handle)[crm_id]["lifecyclestage"] == "lead"
        _hs_update(handle, crm_id, lifecyclestage="customer")  # forward: applied at once
        assert _contacts(handle)[crm_id]["lifecyclestage"] == "customer"


def _sales_moves_on_during_the_next_run(monkeypatch, handle: Any, crm_id: str) -> None:
    original, done = pipeline._enrich, []

    def enrich_then_edit(ctx, leads):  # after the page was read, before anything is written
        if not done:
            done.append(True)
            _hs_update(handle, crm_id, lifecyclestage="opportunity")
        return original(ctx, leads)

    monkeypatch.setattr(pipeline, "_enrich", enrich_then_edit)


@pytest.mark.parametrize("move", ["forward", "backward"])
def test_a_lifecycle_stage_sales_changes_during_the_run_is_not_overwritten(tmp_path, monkeypatch, move):
    with start_sandbox(40, random_seed=2) as handle:
        runner = Runner(handle, tmp_path, "hubspot")
        runner.run(native=True)
        mql = _hubspot_mql(handle, runner)
        if move == "backward":  # leadflow set MQL; bad timing makes the next run move it back to lead
            runner.run(native=True)
            _hs_update(handle, mql, hs_lead_status="BAD_TIMING")
        _sales_moves_on_during_the_next_run(monkeypatch, handle, mql)
        run_id, results = runner.run(native=True)
        assert _contacts(handle)[mql]["lifecyclestage"] == "opportunity"  # neither overwritten nor cleared
        assert _contacts(handle)[mql]["leadflow_stage"] == ("mql" if move == "forward" else "nurture")
        kept = [r for r in runner.audit(run_id, mql) if r["action"] == "kept_manual_edit"]
        assert [(r["field"], r["new_value"]) for r in kept] == [("lifecyclestage", "opportunity")]
        assert not [r for r in runner.audit(run_id, mql) if r["action"].startswith("native_stage")]
        runner.engine.dispose()


def test_a_failure_between_the_clear_and_the_set_leaves_the_lead_pending(tmp_path):
    with start_sandbox(40, random_seed=2) as handle:
        runner = Runner(handle, tmp_path, "hubspot")
        runner.run(native=True)
        mql = _hubspot_mql(handle, runner)
        runner.run(native=True)
        _hs_update(handle, mql, hs_lead_status="BAD_TIMING")
        handle.set_faults(f"hubspot.contacts.batch_update:record_error=VALIDATION_ERROR,ids={mql},skip=1,count=1")
        run_id, results = runner.run(native=True)
        assert mql in {crm_id for r in results for crm_id in r.failures}
        assert "after clearing lifecyclestage" in next(r.failures[mql] for r in results if mql in r.failures)
        actions = _actions(runner.audit(run_id, mql))
        assert actions.index("native_stage_clear") < actions.index("native_stage_move") < actions.index("write_failed")
        assert "write_applied" not in actions
        assert _contacts(handle)[mql].get("lifecyclestage") is None  # cleared, not yet set
        assert mql in state.pending_ids(runner.engine, "hubspot")

        handle.set_faults(None)
        run_id, results = runner.run(native=True)  # the pending lead is re-read and finished
        assert _contacts(handle)[mql]["lifecyclestage"] == "lead"
        actions = _actions(runner.audit(run_id, mql))
        assert "native_stage_clear" not in actions and "write_applied" in actions  # blank: a plain set
        assert mql not in state.pending_ids(runner.engine, "hubspot")
        runner.engine.dispose()


def test_a_set_the_portal_ignored_is_a_failure_not_a_silent_success(tmp_path):
    # a mapping whose order is not the portal's: leadflow takes SQL -> MQL for a forward move
    wrong_order = (("order: [subscriber, lead, marketingqualifiedlead, salesqualifiedlead,",
                    "order: [subscriber, lead, salesqualifiedlead, marketingqualifiedlead,"),)
    with start_sandbox(40, random_seed=2) as handle:
        runner = Runner(handle, tmp_path, "hubspot", wrong_order)
        runner.run(native=True)
        mql = _hubspot_mql(handle, runner)
        _hs_update(handle, mql, hs_lead_status="IN_PROGRESS")
        runner.run(native=True)
        assert _contacts(handle)[mql]["lifecyclestage"] == "salesqualifiedlead"
        _hs_update(handle, mql, hs_lead_status="NEW")  # no longer accepted: MQL again
        run_id, results = runner.run(native=True)
        failure = next(r.failures[mql] for r in results if mql in r.failures)
        assert "HubSpot kept lifecyclestage at another stage than the one sent" in failure
        assert "write_failed" in _actions(runner.audit(run_id, mql))
        assert mql in state.pending_ids(runner.engine, "hubspot")  # said, and retried: never taken as written
        runner.engine.dispose()


# --------------------------------------------------------------------------- Salesforce


def _salesforce_mql(handle: Any, status: str = "Nurturing") -> list[str]:
    """Nurtured leads (Lead Status ``status``) a demo request makes MQLs on the next run."""
    nurture = [i for i, r in _sf_leads(handle).items()
               if r.get("Lead_Stage__c") == "Nurture" and r.get("Status") == status and not r.get("Manual_Stage__c")
               and not r.get("Sales_Accepted__c")]
    assert nurture, "the seed has nurtured leads"
    client = handle.salesforce_client()
    for crm_id in nurture:
        client.Lead.update(crm_id, {"Purchase_Timeline__c": "This Quarter", **{f: _now_iso() for f in SF_ENGAGED}})
    return nurture


def test_salesforce_lead_status_carries_the_stage_and_the_reps_status_decides(tmp_path):
    with start_sandbox(40, random_seed=2) as handle:
        runner = Runner(handle, tmp_path, "salesforce")
        runner.run(native=True)
        assert {r.get("Status") for r in _sf_leads(handle).values() if r.get("Lead_Stage__c") == "Nurture"
                and not r.get("Manual_Stage__c")} >= {"Nurturing"}
        engaged = _salesforce_mql(handle)
        run_id, _ = runner.run(native=True)
        mqls = [i for i in engaged if _sf_leads(handle)[i]["Lead_Stage__c"] == "MQL"]
        assert len(mqls) >= 3 and all(_sf_leads(handle)[i]["Status"] == "Marketing Qualified" for i in mqls)
        accepted, unqualified = mqls[0], mqls[1]

        client = handle.salesforce_client()
        client.Lead.update(accepted, {"Status": "Working - Contacted"})
        client.Lead.update(unqualified, {"Status": "Unqualified"})
        run_id, _ = runner.run(native=True)
        leads = _sf_leads(handle)
        assert leads[accepted]["Lead_Stage__c"] == "SAL" and leads[accepted]["Status"] == "Working - Contacted"
        assert leads[unqualified]["Lead_Stage__c"] == "Disqualified" and leads[unqualified]["Status"] == "Unqualified"
        assert "native_stage_move" not in _actions(runner.audit(run_id, accepted))  # the rep's status stays
        assert "task_requested" not in _actions(runner.audit(run_id, unqualified))  # set by hand: no task
        runner.engine.dispose()


def test_salesforce_with_the_switch_off_leaves_lead_status_alone(tmp_path):
    with start_sandbox(40, random_seed=2) as handle:
        runner = Runner(handle, tmp_path, "salesforce")
        before = {i: r.get("Status") for i, r in _sf_leads(handle).items()}
        runner.run(native=False)
        engaged = _salesforce_mql(handle, status="Open - Not Contacted")
        handle.salesforce_client().Lead.update(engaged[-1], {"Status": "Working - Contacted"})
        run_id, _ = runner.run(native=False)
        leads = _sf_leads(handle)
        assert {i: r.get("Status") for i, r in leads.items() if i != engaged[-1]} == \
            {i: s for i, s in before.items() if i != engaged[-1]}
        assert any(leads[i]["Lead_Stage__c"] == "MQL" for i in engaged)
        assert leads[engaged[-1]]["Lead_Stage__c"] != "SAL"  # the rep's status is not read with the switch off
        assert not [r for r in runner.audit(run_id) if r["action"].startswith("native_stage")]
        runner.engine.dispose()
