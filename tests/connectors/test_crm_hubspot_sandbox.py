"""HubSpot connector against the sandbox, through the real hubspot-api-client."""

from __future__ import annotations

import pytest
from crm_harness import calls, run_sync, sandbox_state, seed_hubspot, touch_hubspot
from crm_harness import fast_retry

from connectors.crm.factory import connector_for_sandbox
from connectors.crm.setup import hubspot_setup
from scoring.tasks import TASK_STAGES


@pytest.fixture()
def hs(sandbox, engine):
    conn = connector_for_sandbox(sandbox, "hubspot", engine, retry=fast_retry())
    hubspot_setup(conn)
    return conn


def test_setup_is_idempotent(sandbox, hs):
    again = hubspot_setup(hs)
    assert again.created == [] and any("leadflow_lead_score" in e for e in again.existing)
    props = sandbox_state(sandbox).hubspot.properties
    assert props["contacts"]["leadflow_stage"]["type"] == "enumeration"
    assert "leadflow_task_key" in props["tasks"]
    assert props["companies"]["leadflow_org_type"]["groupName"] == "leadflow"


def test_full_then_incremental_then_no_change(sandbox, hs, engine):
    ids = seed_hubspot(sandbox, 30, company_extra={"leadflow_org_type": "hospital"}, engaged=10)  # 10 asked for a demo
    first = run_sync(hs, engine)
    assert first.read == 30 and not first.failed and first.quarantined == 0
    portal = sandbox_state(sandbox).hubspot
    record = portal.tables["contacts"].records[ids[0]]
    assert record.get("leadflow_lead_score") and record.get("leadflow_stage") == first.stages[ids[0]] == "mql"
    assert {i: portal.tables["contacts"].records[i]["leadflow_stage"] for i in ids} == first.stages
    assert first.tasks_created == sum(1 for i in ids if portal.tables["contacts"].records[i]["leadflow_stage"]
                                      in TASK_STAGES) > 0

    # the run right after: our own writes are recognised as echoes, nothing is processed
    sandbox.reset_stats()
    second = run_sync(hs, engine)
    assert second.read == 0 and second.written == 0
    assert sum(calls(sandbox, "hubspot.").values()) <= 2

    # three leads change: only their reads, company lookups, one write, and task checks
    touch_hubspot(sandbox, ids[:3], {"jobtitle": "Chief Medical Officer"})
    sandbox.reset_stats()
    third = run_sync(hs, engine)
    assert sorted(third.ids) == sorted(ids[:3])
    used = calls(sandbox, "hubspot.")
    assert used.get("hubspot.contacts.search") == 1
    assert used.get("hubspot.contacts.batch_update", 0) <= 1
    assert used.get("hubspot.associations.batch_read") == 1 and used.get("hubspot.companies.batch_read") == 1

    sandbox.reset_stats()
    fourth = run_sync(hs, engine)
    assert fourth.read == 0
    assert sum(calls(sandbox, "hubspot.").values()) <= 2
    usage = hs.api_usage()
    assert usage["calls"] > 0 and usage["remaining"] is not None
