"""``leadflow crm repair-tasks``: tasks that share a key (from before the key was unique, or made by
hand) lose their extras, the oldest kept, each closure audited; ``--dry-run`` changes nothing.
``leadflow crm setup`` makes the task key unique, or says what to do when it is not."""

from __future__ import annotations

import pytest
from crm_harness import org_create, sandbox_state, seed_hubspot, seed_salesforce
from typer.testing import CliRunner

from state import leads as state
from connectors.crm.factory import connector_for_sandbox
from connectors.crm.setup import hubspot_setup, salesforce_setup
from state.audit import read_audit
from state.schema import make_engine
from sandbox.store import now_ms


@pytest.fixture()
def cli_env(sandbox, monkeypatch, tmp_path):
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("LEADFLOW_DATABASE_URL", url)
    monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", sandbox.hubspot_token)
    monkeypatch.setenv("HUBSPOT_HOST", sandbox.url)
    monkeypatch.setenv("SALESFORCE_INSTANCE_URL", sandbox.url)
    monkeypatch.setenv("SALESFORCE_SESSION_ID", sandbox.credentials.session_id)
    for name in ("SALESFORCE_USERNAME", "SALESFORCE_PASSWORD", "SALESFORCE_CLIENT_ID", "PREFECT_API_URL"):
        monkeypatch.delenv(name, raising=False)
    engine = make_engine(url)
    yield engine
    engine.dispose()


def _cli(*args: str):
    from leadflow.cli import app

    return CliRunner().invoke(app, ["crm", *args])


def _hubspot_duplicates(sandbox, engine) -> tuple[dict[str, list[str]], str]:
    """Two keys with three and two tasks (the second extra of the first already completed), one
    key with a single task; returns key -> task ids oldest first, and the contact of the first key."""
    hubspot_setup(connector_for_sandbox(sandbox, "hubspot", engine))
    leads = seed_hubspot(sandbox, 3, with_company=False)
    portal = sandbox_state(sandbox).hubspot
    layout = {f"{leads[0]}:mql:book_call": ["NOT_STARTED", "NOT_STARTED", "COMPLETED"],
              f"{leads[1]}:sql:send_proposal": ["IN_PROGRESS", "NOT_STARTED"],
              f"{leads[2]}:mql:book_call": ["NOT_STARTED"]}
    made: dict[str, list[str]] = {}
    stamp = now_ms() - 60_000
    for key, statuses in layout.items():
        for status in statuses:
            stamp += 1000
            task_id = portal.next_id("tasks")
            portal.tables["tasks"].insert(task_id, {"leadflow_task_key": key, "hs_task_status": status,
                                                    "hs_timestamp": stamp, "hs_task_subject": "Call"}, stamp, stamp)
            portal.associate("tasks", task_id, "contacts", key.split(":")[0], 204)
            made.setdefault(key, []).append(task_id)
    return made, leads[0]


def _salesforce_duplicates(sandbox) -> tuple[dict[str, list[str]], str]:
    org = sandbox_state(sandbox).salesforce
    leads = seed_salesforce(sandbox, 3)
    layout = {f"{leads[0]}:mql:book_call": ["Not Started", "Not Started", "Completed"],
              f"{leads[1]}:sql:send_proposal": ["In Progress", "Not Started"],
              f"{leads[2]}:mql:book_call": ["Not Started"]}
    made: dict[str, list[str]] = {}
    for key, statuses in layout.items():
        for status in statuses:
            task_id = org_create(org, "Task", {"WhoId": key.split(":")[0], "Subject": "Call", "Status": status,
                                               "IsClosed": status == "Completed", "Priority": "Normal",
                                               "Leadflow_Task_Key__c": key})
            made.setdefault(key, []).append(task_id)
    return made, leads[0]


def _statuses(sandbox, crm: str, ids: list[str]) -> list[str]:
    st = sandbox_state(sandbox)
    if crm == "hubspot":
        return [st.hubspot.tables["tasks"].records[i]["hs_task_status"] for i in ids]
    return [st.salesforce.tables["Task"].records[i]["Status"] for i in ids]


@pytest.mark.parametrize("crm", ["hubspot", "salesforce"])
def test_repair_closes_the_extras_keeping_the_oldest_audited_and_dry_run_changes_nothing(sandbox, cli_env, crm):
    made, first_lead = _hubspot_duplicates(sandbox, cli_env) if crm == "hubspot" else _salesforce_duplicates(sandbox)
    keys = list(made)
    state.mark_tasks_created(cli_env, crm, {keys[1]: made[keys[1]][1]}, {keys[1]: keys[1].split(":")[0]})
    before = {key: _statuses(sandbox, crm, ids) for key, ids in made.items()}

    dry = _cli("repair-tasks", "--crm", crm, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert f"would close: task {made[keys[0]][1]} (key {keys[0]}); kept {made[keys[0]][0]}" in dry.output
    assert "2 key(s) shared by several tasks; 2 task(s) would close; 1 extra(s) already closed" in dry.output
    assert {key: _statuses(sandbox, crm, ids) for key, ids in made.items()} == before
    assert read_audit(cli_env, crm=crm) == []

    real = _cli("repair-tasks", "--crm", crm)
    assert real.exit_code == 0, real.output
    done = "COMPLETED" if crm == "hubspot" else "Completed"
    assert _statuses(sandbox, crm, made[keys[0]]) == [before[keys[0]][0], done, done]
    assert _statuses(sandbox, crm, made[keys[1]]) == [before[keys[1]][0], done]
    assert _statuses(sandbox, crm, made[keys[2]]) == before[keys[2]]
    rows = read_audit(cli_env, crm=crm)
    assert sorted((r["action"], r["crm_id"], r["field"], r["new_value"]) for r in rows) == sorted([
        ("task_closed", first_lead, keys[0], made[keys[0]][1]),
        ("task_closed", keys[1].split(":")[0], keys[1], made[keys[1]][1])])
    assert all("kept" in str(r["reasons"]) and not r["dry_run"] for r in rows)
    local = state.task_key_rows(cli_env, crm, [keys[1]])[keys[1]]
    assert local["crm_task_id"] == made[keys[1]][0]  # the local record names the task that stays

    again = _cli("repair-tasks", "--crm", crm)
    assert again.exit_code == 0 and "0 task(s) closed; 3 extra(s) already closed" in again.output
    assert len(read_audit(cli_env, crm=crm)) == 2


def test_repair_reports_a_failed_closure_and_exits_1(sandbox, cli_env):
    made, _ = _salesforce_duplicates(sandbox)
    extra = made[next(iter(made))][1]
    sandbox.set_faults(f"salesforce.composite.update:record_error=FIELD_CUSTOM_VALIDATION_EXCEPTION,ids={extra}")
    result = _cli("repair-tasks", "--crm", "salesforce")
    assert result.exit_code == 1
    assert f"failed: task {extra}" in result.output and "1 failed" in result.output
    assert len(read_audit(cli_env, crm="salesforce")) == 1  # the closure that landed, only


def test_hubspot_setup_makes_the_task_key_unique_or_says_what_to_do(sandbox, cli_env):
    portal = sandbox_state(sandbox).hubspot
    first = _cli("setup", "--crm", "hubspot")
    assert first.exit_code == 0, first.output
    assert portal.properties["tasks"]["leadflow_task_key"]["hasUniqueValue"] is True
    portal.properties["tasks"]["leadflow_task_key"]["hasUniqueValue"] = False  # made before this change
    again = _cli("setup", "--crm", "hubspot")
    assert again.exit_code == 1
    problem = [line for line in again.output.splitlines() if line.startswith("problem:")]
    assert len(problem) == 1 and "tasks.leadflow_task_key exists without unique values" in problem[0]
    assert "repair-tasks" in problem[0] and "tasks.key_field" in problem[0]


def test_salesforce_setup_asks_for_an_external_id_unique_task_key(sandbox, engine):
    conn = connector_for_sandbox(sandbox, "salesforce", engine)
    org = sandbox_state(sandbox).salesforce
    assert salesforce_setup(conn).ok
    key = org.schema["Task"]["Leadflow_Task_Key__c"]
    key.unique = False
    report = salesforce_setup(conn)
    assert not report.ok and len(report.problems) == 1
    assert "Task.Leadflow_Task_Key__c exists but is not External ID + Unique" in report.problems[0]
    del org.schema["Task"]["Leadflow_Task_Key__c"]
    org.lower["Task"].pop("leadflow_task_key__c")
    report = salesforce_setup(conn)
    assert [line for line in report.missing if line.startswith("Task.Leadflow_Task_Key__c: Text(200), External ID + Unique")]
