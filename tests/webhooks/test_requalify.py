"""The by-id flow (``requalify_leads``) against the sandbox through the real HubSpot client: it
runs the page pipeline on a few leads now, beside a window run, and never writes a lead that run
is writing."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from connectors.crm.factory import connector_from_env
from connectors.crm.setup import hubspot_setup
from flows import sync
from flows.sync import requalify_leads, sync_leads
from sandbox import start_sandbox
from sandbox.environment import environment, sandbox_environment
from state import claims, locks
from state import leads as state
from state.audit import read_audit
from state.schema import make_engine

pytestmark = pytest.mark.prefect

LEADS = 12


@pytest.fixture()
def hubspot(tmp_path: Path):
    with start_sandbox(LEADS, random_seed=5) as handle:
        env = {**sandbox_environment(handle), "LEADFLOW_DATABASE_URL": f"sqlite:///{tmp_path / 'state.db'}",
               "LEADFLOW_HOME": str(tmp_path)}
        with environment(env):
            hubspot_setup(connector_from_env("hubspot"))
            yield handle, make_engine(env["LEADFLOW_DATABASE_URL"])


def _leadflow_tasks(handle) -> list[dict]:
    tasks = handle.dump_state(api="hubspot", object="tasks")["hubspot"]["tasks"]
    return [t for t in tasks if t["properties"].get("leadflow_task_key")]


def _contact_ids(handle) -> list[str]:
    return sorted(c["id"] for c in handle.dump_state(api="hubspot", object="contacts")["hubspot"]["contacts"])


def test_requalify_writes_the_leads_by_id_once(prefect_server, hubspot):
    handle, engine = hubspot
    ids = _contact_ids(handle)[:3]
    first = requalify_leads("hubspot", ids)
    assert first["read"] == 3 and first["changed"] == 3 and first["failed"] == 0
    audit = read_audit(engine, run_id=first["run_id"], limit=1000)
    assert {row["crm_id"] for row in audit if row["action"] == "write_applied"} == set(ids)
    tasks = _leadflow_tasks(handle)
    again = requalify_leads("hubspot", ids)
    assert again["changed"] == 0 and again["tasks_created"] == 0
    assert len(_leadflow_tasks(handle)) == len(tasks)
    assert state.pending_ids(engine, "hubspot") == []


def test_a_lead_another_run_is_writing_is_left_to_it_and_stays_pending(prefect_server, hubspot, monkeypatch):
    handle, engine = hubspot
    monkeypatch.setattr(sync, "FAST_LANE_WAIT_SECONDS", 0.3)  # the claim stays held: no need to wait 5 s for it
    busy, free = _contact_ids(handle)[:2]
    locks.acquire(engine, "hubspot", "window-run")  # a window run holds the CRM lock and is writing `busy`
    assert claims.claim(engine, "hubspot", [busy], "window-run", timedelta(minutes=1)) == {busy}
    summary = requalify_leads("hubspot", [busy, free])  # does not wait for the CRM lock
    assert summary["read"] == 1
    assert state.pending_ids(engine, "hubspot") == [busy]
    handle.reset_stats()
    audit = read_audit(engine, run_id=summary["run_id"], limit=1000)
    assert busy not in {row["crm_id"] for row in audit}
    claims.release(engine, "hubspot", [busy], "window-run")
    locks.release(engine, "hubspot", "window-run")
    window = sync_leads("hubspot")  # the next run re-reads the pending lead by id
    assert window["retried_pending"] >= 1 and state.pending_ids(engine, "hubspot") == []


def test_a_window_run_leaves_a_lead_claimed_by_a_by_id_run(prefect_server, hubspot):
    handle, engine = hubspot
    busy = _contact_ids(handle)[0]
    locks.acquire(engine, "hubspot:by-id", "by-id-run")
    claims.claim(engine, "hubspot", [busy], "by-id-run", timedelta(minutes=1))
    window = sync_leads("hubspot")
    assert window["read"] == LEADS - 1
    assert busy not in {row["crm_id"] for row in read_audit(engine, run_id=window["run_id"], limit=10_000)}
    assert state.pending_ids(engine, "hubspot") == [busy]


def test_the_claims_of_a_run_whose_lock_is_gone_are_taken_over(prefect_server, hubspot):
    """A run that crashed mid-page leaves its claims; the next run takes its lock over and, with it,
    the claims: the crashed run's leads are processed now, not after the claims' lease."""
    handle, engine = hubspot
    stuck = _contact_ids(handle)[0]
    claims.claim(engine, "hubspot", [stuck], "crashed-run", timedelta(minutes=10))  # its lock row is gone
    window = sync_leads("hubspot")
    assert window["read"] == LEADS
    assert stuck in {row["crm_id"] for row in read_audit(engine, run_id=window["run_id"], limit=10_000)}
    assert state.pending_ids(engine, "hubspot") == []
