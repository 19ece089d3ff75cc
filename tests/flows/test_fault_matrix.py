"""The fault matrix: for each fault the sandbox can inject, a faulted run plus one clean rerun end
with the same leads written and the same tasks as a run that met no fault, no duplicate task, an
audit row for every CRM change, and the outcome (hence the exit code) the fault calls for.

Through the real pipeline (the Prefect flows), the real client libraries and the sandbox over HTTP.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from connectors.crm import factory
from connectors.retry import RetryPolicy
from connectors.crm.setup import hubspot_setup
from state.audit import read_audit
from sandbox.environment import environment, sandbox_environment
from flows.sync import sync_leads
from state.schema import make_engine
from sandbox import start_sandbox

pytestmark = pytest.mark.prefect

LEADS = 24
SEED = 21
HELD = 3.0  # seconds the sandbox holds a response ...
CLIENT_TIMEOUT = 1.5  # ... past the client's timeout (set for the scenarios that need it)


@dataclass(frozen=True)
class Scenario:
    crm: str
    name: str
    faults: str | None
    outcome: str
    rate_limits: str | None = None
    short_timeout: bool = False
    waits: tuple[float, ...] = ()  # Retry-After waits the retry layer must have taken


SCENARIOS = [
    Scenario("hubspot", "task upsert held past the client timeout, applied",
             f"hubspot.tasks.batch_upsert:timeout={HELD},count=1", "success", short_timeout=True),
    Scenario("hubspot", "task upsert applied, connection dropped", "hubspot.tasks.batch_upsert:drop=after,count=1",
             "success"),
    Scenario("hubspot", "429 without Retry-After", "hubspot.contacts.batch_update:status=429,count=2", "success"),
    Scenario("hubspot", "429 with Retry-After", "hubspot.contacts.batch_update:status=429,retry_after=0.25,count=1",
             "success", waits=(0.25,)),
    Scenario("hubspot", "5xx", "hubspot.contacts.batch_update:status=502,count=2", "success"),
    Scenario("hubspot", "connection dropped before applying", "hubspot.contacts.batch_update:drop,count=1", "success"),
    Scenario("hubspot", "connection dropped after applying", "hubspot.contacts.batch_update:drop=after,count=1",
             "success"),
    Scenario("hubspot", "daily limit reached", None, "stopped_early", rate_limits="hubspot_daily=6"),
    Scenario("salesforce", "task upsert held past the client timeout, applied",
             f"salesforce.composite.upsert:timeout={HELD},count=1", "success", short_timeout=True),
    Scenario("salesforce", "expired session", "salesforce.session:expire_after=3", "success"),
    Scenario("salesforce", "UNABLE_TO_LOCK_ROW", "salesforce.composite.update:record_error=UNABLE_TO_LOCK_ROW,count=5",
             "success"),
    Scenario("salesforce", "5xx on the query", "salesforce.query:status=503,count=2", "success"),
    Scenario("salesforce", "daily limit at the task upsert", "salesforce.composite.upsert:status=403", "stopped_early"),
    Scenario("salesforce", "per-record validation errors",
             "salesforce.composite.update:record_error=FIELD_CUSTOM_VALIDATION_EXCEPTION,count=3", "partial"),
]


def _outcome(summary: dict) -> str:
    if summary.get("outcome"):
        return summary["outcome"]
    if summary.get("stopped_early"):
        return "stopped_early"
    return "partial" if summary["failed"] or summary["quarantined"] else "success"


def _env(handle, folder: Path) -> dict[str, str]:
    return {**sandbox_environment(handle), "LEADFLOW_DATABASE_URL": f"sqlite:///{folder / 'state.db'}",
            "LEADFLOW_HOME": str(folder)}


def _crm_view(handle, crm: str) -> tuple[dict[str, str], list[str]]:
    """(lead id -> stage, task keys) as the CRM holds them."""
    if crm == "hubspot":
        state = handle.dump_state(api="hubspot")["hubspot"]
        stages = {c["id"]: c["properties"].get("leadflow_stage") or "" for c in state["contacts"]}
        keys = [t["properties"]["leadflow_task_key"] for t in state["tasks"] if t["properties"].get("leadflow_task_key")]
        return stages, keys
    sf = handle.salesforce_client()
    stages = {r["Id"]: r["Lead_Stage__c"] or "" for r in sf.query_all("SELECT Id, Lead_Stage__c FROM Lead")["records"]}
    keys = [r["Leadflow_Task_Key__c"] for r in
            sf.query_all("SELECT Leadflow_Task_Key__c FROM Task WHERE Leadflow_Task_Key__c != null")["records"]]
    return stages, keys


def _prepare(handle, crm: str) -> None:
    if crm == "hubspot":
        hubspot_setup(factory.connector_from_env("hubspot"))


@pytest.fixture(scope="module")
def references(prefect_server, tmp_path_factory):
    """What a run that meets no fault writes, per CRM."""
    out = {}
    for crm in ("hubspot", "salesforce"):
        folder = tmp_path_factory.mktemp(f"reference-{crm}")
        with start_sandbox(LEADS, random_seed=SEED) as handle, environment(_env(handle, folder)):
            _prepare(handle, crm)
            assert _outcome(sync_leads(crm)) == "success"
            out[crm] = _crm_view(handle, crm)
    return out


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[f"{s.crm}: {s.name}" for s in SCENARIOS])
def test_a_faulted_run_and_one_clean_rerun_end_as_a_run_without_faults(scenario, references, tmp_path, monkeypatch):
    waits: list[float] = []
    build = factory.connector_from_env
    overrides: dict = {"retry": RetryPolicy(base_wait=0.01, max_wait=2.0, jitter=False, sleep=waits.append)}
    if scenario.short_timeout:
        overrides["timeout"] = CLIENT_TIMEOUT
    monkeypatch.setattr(factory, "connector_from_env", lambda crm, **kw: build(crm, **{**overrides, **kw}))

    with start_sandbox(LEADS, random_seed=SEED) as handle, environment(_env(handle, tmp_path)):
        _prepare(handle, scenario.crm)
        handle.set_faults(scenario.faults)
        handle.set_rate_limits(scenario.rate_limits)
        faulted = sync_leads(scenario.crm)
        assert _outcome(faulted) == scenario.outcome, faulted
        for wait in scenario.waits:
            assert wait in waits  # the server's Retry-After, not the backoff
        handle.set_faults(None)
        handle.set_rate_limits(None)
        handle.reset_limits()
        handle.restore_salesforce_session()  # the session the test's own client reads with
        rerun = sync_leads(scenario.crm)
        assert _outcome(rerun) == "success", rerun

        stages, keys = _crm_view(handle, scenario.crm)
        ref_stages, ref_keys = references[scenario.crm]
        assert stages == ref_stages
        assert sorted(keys) == sorted(ref_keys)
        assert not [k for k, n in Counter(keys).items() if n > 1], "duplicate task"

        engine = make_engine(_env(handle, tmp_path)["LEADFLOW_DATABASE_URL"])
        audit = read_audit(engine, limit=100_000)
        staged = {(r["crm_id"], r["new_value"]) for r in audit if r["action"] == "stage_move"}
        missing = [(i, s) for i, s in stages.items() if s and (i, s) not in staged]
        assert not missing, f"CRM changes without an audit row: {missing[:5]}"
        requested = {r["field"] for r in audit if r["action"] == "task_requested"}
        assert set(keys) <= requested, "a task in the CRM without its audit row"
        engine.dispose()
