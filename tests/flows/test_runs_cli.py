"""``leadflow runs`` / ``failures`` / ``audit`` on real runs with a failed write and a quarantined lead,
through the pipeline, the sandbox and the real HubSpot client; and the run's Prefect artifacts."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from connectors.crm.factory import connector_from_env
from connectors.crm.setup import hubspot_setup
from sandbox.environment import environment, sandbox_environment
from state.locks import RunLocked, acquire, release
from state.runs import outcome_of, read_runs
from flows.sync import sync_leads
from leadflow.cli import app
from state.schema import make_engine
from sandbox import start_sandbox

pytestmark = pytest.mark.prefect


@pytest.fixture(scope="module")
def runs_with_failures(prefect_server, tmp_path_factory):
    """A sandbox where one lead holds a bad score (quarantined) and one lead's write is refused
    (failed), after a dry run, a real run and a run refused by the lock."""
    folder = tmp_path_factory.mktemp("runs-cli")
    url = f"sqlite:///{folder / 'state.db'}"
    with start_sandbox(20, random_seed=5) as handle:
        env = {**sandbox_environment(handle), "LEADFLOW_DATABASE_URL": url, "LEADFLOW_HOME": str(folder)}
        with environment(env):
            hubspot_setup(connector_from_env("hubspot"))
            contacts = handle.dump_state(api="hubspot", object="contacts")["hubspot"]["contacts"]
            bad, failing = contacts[0]["id"], contacts[1]["id"]
            handle.state.hubspot.write("contacts", bad, {"leadflow_lead_score": "140"})
            handle.set_faults(f"hubspot.contacts.batch_update:record_error=VALIDATION_ERROR,ids={failing}")
            dry = sync_leads("hubspot", dry_run=True)
            real = sync_leads("hubspot")
            engine = make_engine(url)
            acquire(engine, "hubspot", "someone-else")
            with pytest.raises(RunLocked) as refused:
                sync_leads("hubspot")
            release(engine, "hubspot", "someone-else")
            yield {"env": env, "engine": engine, "dry": dry, "real": real, "bad": bad, "failing": failing,
                   "refused": refused.value}
            engine.dispose()


def _cli(env, *args: str):
    with environment({**env, "COLUMNS": "260"}):  # a wide terminal: rich folds tables to fit
        return CliRunner().invoke(app, list(args))


def test_runs_lists_each_run_with_its_outcome(runs_with_failures):
    r = runs_with_failures
    rows = read_runs(r["engine"], "hubspot")
    assert [row["run_id"] for row in rows][1:] == [r["real"]["run_id"], r["dry"]["run_id"]]
    refused, real, dry = rows
    assert refused["outcome"] == "failed" and refused["error"].startswith("RunLocked: hubspot: locked by run someone-else")
    assert real["outcome"] == "partial" and real["failed"] == 1 and real["quarantined"] == 1
    assert real["read"] == 20 and real["api_calls"] > 0 and real["until"] is not None and not real["dry_run"]
    assert dry["dry_run"] and dry["outcome"] == "partial"

    shown = _cli(r["env"], "runs", "--crm", "hubspot")
    assert shown.exit_code == 0, shown.output
    assert r["real"]["run_id"] in shown.output and "beginning → " in shown.output
    assert "partial" in shown.output and "failed" in shown.output and "RunLocked" in shown.output

    as_json = json.loads(_cli(r["env"], "runs", "--json", "--limit", "2").output)
    assert [row["outcome"] for row in as_json] == ["failed", "partial"]
    assert as_json[1]["run_id"] == r["real"]["run_id"] and as_json[1]["quarantined"] == 1


def test_failures_lists_the_failed_and_the_quarantined_lead_without_values(runs_with_failures):
    r = runs_with_failures
    rows = json.loads(_cli(r["env"], "failures", "--crm", "hubspot", "--json").output)
    by_id = {row["crm_id"]: row for row in rows}
    assert set(by_id) == {r["bad"], r["failing"]}
    assert by_id[r["bad"]]["kind"] == "quarantined" and "leadflow_lead_score" in by_id[r["bad"]]["reason"]
    assert by_id[r["failing"]]["kind"] == "write_failed"
    assert all(row["attempts"] >= 1 and row["next_retry"] == "next run" and row["first_seen"] for row in rows)

    shown = _cli(r["env"], "failures")
    assert shown.exit_code == 0 and "quarantined" in shown.output and "write_failed" in shown.output
    assert "next run" in shown.output


def test_audit_takes_a_run_id_prefix_pages_and_shows_dry_runs(runs_with_failures):
    r = runs_with_failures
    run_id = r["real"]["run_id"]
    page = json.loads(_cli(r["env"], "audit", "--run", run_id[:8], "--limit", "5", "--json").output)
    assert page["total"] > 5 and len(page["rows"]) == 5 and {row["run_id"] for row in page["rows"]} == {run_id}
    ids = [row["id"] for row in page["rows"]]
    assert ids == sorted(ids, reverse=True)  # newest first
    second = json.loads(_cli(r["env"], "audit", "--run", run_id, "--limit", "5", "--offset", "5", "--json").output)
    assert max(row["id"] for row in second["rows"]) < min(ids)

    shown = _cli(r["env"], "audit", "--run", run_id[:8], "--limit", "3")
    assert shown.exit_code == 0, shown.output
    assert f"showing 1-3 of {page['total']}" in shown.output and "dry run" in shown.output
    assert run_id in shown.output

    dry = json.loads(_cli(r["env"], "audit", "--run", r["dry"]["run_id"], "--limit", "1", "--json").output)
    assert dry["rows"][0]["dry_run"] == 1
    assert "yes" in _cli(r["env"], "audit", "--run", r["dry"]["run_id"], "--limit", "1").output

    actions = {row["action"] for row in json.loads(_cli(r["env"], "audit", "--lead", r["bad"], "--json").output)["rows"]}
    assert "quarantined" in actions

    missing = _cli(r["env"], "audit", "--run", "zzz")
    assert missing.exit_code == 2 and "no audit rows for a run id starting with 'zzz'" in missing.output


def test_an_ambiguous_run_id_prefix_says_so_in_one_line(runs_with_failures):
    from state.audit import AuditEntry, AuditLog

    r = runs_with_failures
    for run_id in ("cli-run-aa1", "cli-run-aa2"):
        AuditLog(r["engine"], run_id, "sync_leads", "m", dry_run=False).record(
            [AuditEntry("hubspot", "L1", "field_set", "f", None, 1)])
    result = _cli(r["env"], "audit", "--run", "cli-run-aa")
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: run id prefix 'cli-run-aa' matches several runs (cli-run-aa1, cli-run-aa2); give more characters"]
    assert json.loads(_cli(r["env"], "audit", "--run", "cli-run-aa2", "--json").output)["total"] == 1


def test_audit_verify_passes_on_the_runs_log_and_fails_on_an_edit(runs_with_failures):
    from sqlalchemy import select, update

    from state import schema as store

    r = runs_with_failures
    intact = _cli(r["env"], "audit", "--verify", "--crm", "hubspot")
    assert intact.exit_code == 0 and "hubspot: audit chain intact" in intact.output
    engine = r["engine"]
    with engine.begin() as conn:
        row_id = conn.execute(select(store.audit_log.c.id).order_by(store.audit_log.c.id).limit(1)).scalar_one()
        conn.execute(update(store.audit_log).where(store.audit_log.c.id == row_id).values(old_value="tampered"))
    broken = _cli(r["env"], "audit", "--verify")
    assert broken.exit_code == 1
    assert broken.output.strip().splitlines() == [
        f"hubspot: audit row id {row_id} (seq 1) was edited: its content does not match its hash"]


def test_the_run_publishes_runs_and_failures_artifacts(runs_with_failures):
    run_id = runs_with_failures["real"]["run_id"]
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = {key: client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
                 for key in ("leadflow-runs-hubspot", "leadflow-failures-hubspot")}
    assert all(found.values())
    ours = [a for a in found["leadflow-failures-hubspot"] if run_id in (a.description or "")]
    table = json.loads(ours[0].data) if isinstance(ours[0].data, str) else ours[0].data
    assert {row["kind"] for row in table} == {"quarantined", "write_failed"}
    history = [a for a in found["leadflow-runs-hubspot"] if a.flow_run_id and str(a.flow_run_id) == run_id]
    rows = json.loads(history[0].data) if isinstance(history[0].data, str) else history[0].data
    assert rows[0]["run_id"] == run_id and rows[0]["outcome"] == "partial"


def test_outcome_is_derived_when_the_summary_has_none():
    assert outcome_of({"failed": 0, "quarantined": 0}) == "success"
    assert outcome_of({"quarantined": 2}) == "partial"
    assert outcome_of({"stopped_early": "daily limit", "failed": 1}) == "stopped_early"
    assert outcome_of({"outcome": "failed", "failed": 0}) == "failed"


def test_next_retry_is_the_crm_s_next_scheduled_sync(runs_with_failures):
    from datetime import datetime, timedelta, timezone

    from prefect.client.orchestration import get_client
    from prefect.states import Scheduled

    from flows.runs import failure_rows

    when = (datetime.now(timezone.utc) + timedelta(minutes=40)).replace(microsecond=0)
    with get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name("sync-leads")
        deployment = client.create_deployment(flow_id=flow_id, name="hubspot-incremental")
        client.create_flow_run_from_deployment(deployment, state=Scheduled(scheduled_time=when))
        rows = failure_rows(runs_with_failures["engine"], "hubspot")
        client.delete_deployment(deployment)
    assert {row["next_retry"] for row in rows} == {f"{when:%Y-%m-%d %H:%M} UTC"}


def test_a_run_whose_lock_is_taken_over_stops_and_is_recorded_failed(prefect_server, tmp_path, monkeypatch):
    """The lock is taken over while the run's first write is slow: the heartbeat notices, the run
    audits what it wrote, stops before sending its held tasks, and its history row says why."""
    import threading
    import time

    from state import leads as state
    from state.audit import read_audit
    from state.locks import LEASE_ENV, LockLost, read_lock
    from state import schema as store

    url = f"sqlite:///{tmp_path / 'lost.db'}"
    monkeypatch.setenv(LEASE_ENV, "1")
    engine = make_engine(url)
    with start_sandbox(20, random_seed=5) as handle, environment(
            {**sandbox_environment(handle), "LEADFLOW_DATABASE_URL": url, "LEADFLOW_HOME": str(tmp_path)}):
        hubspot_setup(connector_from_env("hubspot"))
        handle.set_faults("hubspot.contacts.batch_update:delay=2")
        stop = threading.Event()

        def take_over() -> None:  # once the first page's write is about to start (its leads in progress)
            while not stop.is_set():
                held = read_lock(engine, "hubspot")
                if held is not None and state.pending_ids(engine, "hubspot", kind="in_progress"):
                    with engine.begin() as conn:
                        conn.execute(store.run_locks.update().values(holder="intruder", host="elsewhere", pid=1))
                    return
                time.sleep(0.02)

        intruder = threading.Thread(target=take_over)
        intruder.start()
        try:
            with pytest.raises(LockLost, match="lost its lock to run intruder"):
                sync_leads("hubspot")
        finally:
            stop.set()
            intruder.join()
        tasks = [t for t in handle.dump_state(api="hubspot", object="tasks")["hubspot"]["tasks"]
                 if t["properties"].get("leadflow_task_key")]
        run = read_runs(engine, "hubspot")[0]
    assert run["outcome"] == "failed" and run["error"].startswith("LockLost: hubspot: run ")
    audited = {row["crm_id"] for row in read_audit(engine, run_id=run["run_id"], limit=10_000)}
    assert len(audited) >= 15 and tasks == []  # the page's field writes are audited; held tasks never went out
    assert state.pending_ids(engine, "hubspot")  # their leads wait for the next run that holds the lock
    engine.dispose()
