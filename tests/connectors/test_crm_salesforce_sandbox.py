"""Salesforce connector against the sandbox, through the real simple-salesforce."""

from __future__ import annotations

import pytest
from crm_harness import fast_retry
from crm_harness import calls, run_sync, sandbox_state, sandbox_waterfall, seed_salesforce

from connectors.crm.factory import connector_for_sandbox
from connectors.crm.setup import salesforce_setup


@pytest.fixture()
def sf(sandbox, engine):
    return connector_for_sandbox(sandbox, "salesforce", engine, retry=fast_retry())


def test_setup_reports_no_missing_fields(sf):
    report = salesforce_setup(sf)
    assert report.missing == [], report.missing
    assert "Lead.Lead_Score__c" in report.existing and "Task.Leadflow_Task_Key__c" in report.existing


def test_full_then_incremental_then_no_change(sandbox, sf, engine):
    # hospitals by their CRM industry (enrichment fills the blank org type); half had a meeting
    ids = seed_salesforce(sandbox, 40, extra={"Industry": "Hospital & Health Care"}, engaged=20)
    first = run_sync(sf, engine, waterfall=sandbox_waterfall(sandbox, engine))
    assert first.read == 40 and not first.failed and first.quarantined == 0
    org = sandbox_state(sandbox).salesforce
    lead = org.tables["Lead"].records[ids[0]]
    assert lead.get("Lead_Score__c") is not None and lead.get("Lead_Stage__c") == first.stages[ids[0]] == "MQL"
    assert {org.tables["Lead"].records[i]["Lead_Stage__c"] for i in ids} == set(first.stages.values())
    assert lead.get("Org_Type__c") == "Hospital"  # if_blank filled
    tasks = org.tables["Task"].records
    assert len(tasks) == first.tasks_created > 0
    assert {t["WhoId"] for t in tasks.values()} <= set(ids)

    sandbox.reset_stats()
    second = run_sync(sf, engine)  # re-reads our own writes once (no echo stamp on Salesforce): no writes
    assert second.written == 0 and second.tasks_created == 0
    assert calls(sandbox, "salesforce.").get("salesforce.query", 0) == 1

    from sandbox.store import now_ms

    for record_id in ids[:2]:
        org.tables["Lead"].update(record_id, {"Title": "Chief Medical Officer"}, now_ms())
    sandbox.reset_stats()
    third = run_sync(sf, engine)
    assert sorted(third.ids) == sorted(ids[:2])
    used = calls(sandbox, "salesforce.")
    assert used.get("salesforce.query") == 1 + (1 if third.tasks_created else 0)  # + task key lookup
    assert used.get("salesforce.composite.update", 0) <= 1

    # no change since: the two leads written last run come back once (Salesforce returns no
    # SystemModstamp on a collection update; fetching it would cost a call), nothing is written
    for _ in range(2):
        sandbox.reset_stats()
        fourth = run_sync(sf, engine)
        assert fourth.read in (0, 2) and fourth.written == 0 and fourth.tasks_created == 0
        assert sum(calls(sandbox, "salesforce.").values()) <= 2
    assert fourth.read == 0
    assert sf.api_usage()["remaining"] is not None


def test_soql_values_are_escaped(sandbox, sf, engine):
    ids = seed_salesforce(sandbox, 5)
    hostile = "x' OR Id != '"
    pages = list(sf.fetch_by_ids([hostile, ids[0] + "\\", "' OR LastName LIKE '%"]))
    assert [lead.crm_id for page in pages for lead in page.leads] == []
    assert sf.find_tasks([hostile, "a\\' OR Subject != '"]) == {}
    pages = list(sf.fetch_by_ids([ids[1]]))
    assert [lead.crm_id for page in pages for lead in page.leads] == [ids[1]]


def test_company_value_with_quotes_round_trips(sandbox, sf, engine):
    ids = seed_salesforce(sandbox, 1, extra={"Company": "O'Brien \\ Sons' \"Clinic\" OR Id != null"})
    out = run_sync(sf, engine)
    assert out.read == 1 and not out.failed
    page = next(iter(sf.fetch_by_ids(ids)))
    assert page.leads[0].company_name == "O'Brien \\ Sons' \"Clinic\" OR Id != null"
