"""The pipeline's task writes under the fault the issue measured: the first task upsert is held past
the client's timeout while the CRM applies it. The run and one clean rerun end with one task per
key; the run's count and its audit rows say how many tasks it created."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from connectors.crm.setup import hubspot_setup
from state.audit import read_audit
from sandbox.environment import environment, sandbox_environment
from flows.pipeline import process_page, send_held_tasks
from flows.sync import _context
from state.schema import make_engine
from sandbox import start_sandbox

UPSERT = {"hubspot": "hubspot.tasks.batch_upsert", "salesforce": "salesforce.composite.upsert"}


def _keys(handle, crm: str) -> Counter:
    if crm == "hubspot":
        tasks = handle.dump_state(api="hubspot", object="tasks")["hubspot"]["tasks"]
        return Counter(t["properties"].get("leadflow_task_key") for t in tasks
                       if t["properties"].get("leadflow_task_key"))
    records = handle.salesforce_client().query(
        "SELECT Leadflow_Task_Key__c FROM Task WHERE Leadflow_Task_Key__c != null")["records"]
    return Counter(r["Leadflow_Task_Key__c"] for r in records)


def _run(crm: str, run_id: str, engine, client_timeout: float | None = None) -> tuple[int, dict]:
    """One full pass of the pipeline (every page, then the held tasks): the tasks it created, and
    its connector's API usage."""
    ctx = _context(crm, "sync_leads", run_id, False, engine)
    if client_timeout is not None:
        ctx.connector.config.timeout = client_timeout
    pages = [process_page(ctx, page) for page in ctx.connector.iter_pages(None, None)]
    created = sum(p.tasks_created for p in pages) + send_held_tasks(ctx).tasks_created
    return created, ctx.connector.api_usage()


@pytest.mark.parametrize("crm", ["hubspot", "salesforce"])
def test_a_held_task_upsert_and_a_clean_rerun_leave_one_task_per_key_and_true_counts(tmp_path, crm):
    url = f"sqlite:///{tmp_path / 'state.db'}"
    with start_sandbox(60, random_seed=3) as handle, \
            environment({**sandbox_environment(handle), "LEADFLOW_DATABASE_URL": url, "LEADFLOW_HOME": str(tmp_path)}):
        engine = make_engine(url)
        if crm == "hubspot":
            hubspot_setup(_context(crm, "setup", "setup", False, engine).connector)
        # The client gives up after 1 s, and every other call of the run must answer inside it: a 0.5 s
        # limit failed once in a full suite, whose process pauses for its garbage collections.
        handle.set_faults(f"{UPSERT[crm]}:timeout=2.0,count=1")
        created, usage = _run(crm, "run-held", engine, client_timeout=1.0)
        assert usage["retries"] == {UPSERT[crm].split(".", 1)[1]: 1}  # the held upsert, retried once
        time.sleep(2.0)  # the held request has been applied by now
        handle.set_faults(None)
        keys = _keys(handle, crm)
        assert keys and max(keys.values()) == 1
        assert created == sum(keys.values())
        audited = [r for r in read_audit(engine, run_id="run-held", limit=10_000) if r["action"] == "task_created"]
        assert sorted(r["field"] for r in audited) == sorted(keys)

        again, _ = _run(crm, "run-clean", engine)
        assert again == 0 and _keys(handle, crm) == keys
        engine.dispose()
