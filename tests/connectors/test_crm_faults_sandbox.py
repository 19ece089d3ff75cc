"""Injected 429s, 500s, timeouts, dropped connections, expired sessions and per-record errors lose
nothing; daily quotas and the run budget stop a run cleanly."""

from __future__ import annotations

import pytest
from crm_harness import fast_retry
from crm_harness import calls, run_sync, sandbox_state, seed_hubspot, seed_salesforce

from state import leads as state
from connectors.crm.factory import connector_for_sandbox
from connectors.retry import QuotaExhausted
from connectors.crm.setup import hubspot_setup


def test_hubspot_faults_lose_nothing(sandbox, engine):
    sleeps: list[float] = []
    conn = connector_for_sandbox(sandbox, "hubspot", engine, retry=fast_retry(sleep=sleeps.append), timeout=0.5)
    hubspot_setup(conn)
    ids = seed_hubspot(sandbox, 60)
    bad = ids[7]
    sandbox.set_faults(
        "hubspot.contacts.list:status=429,count=2;"
        "hubspot.contacts.batch_update:status=500,count=2;"
        "hubspot.companies.batch_read:timeout=1.5,count=1;"
        "hubspot.associations.batch_read:drop,count=1;"
        f"hubspot.contacts.batch_update:record_error=VALIDATION_ERROR,ids={bad},message=leadflow_stage is invalid"
    )
    first = run_sync(conn, engine)
    assert first.read == 60
    assert set(first.failed) == {bad}
    assert first.failed[bad].startswith(f"hubspot:{bad}: contacts {bad}: ") and "leadflow_stage" in first.failed[bad]
    assert 10.0 in sleeps  # the 429 waited as X-HubSpot-RateLimit-Interval-Milliseconds said
    assert state.pending_ids(engine, "hubspot") == [bad]
    usage = conn.api_usage()
    assert usage["retries"].get("contacts.list") == 2 and usage["retries"].get("contacts.batch_update") == 2
    assert usage["retries"].get("companies.batch_read") == 1  # the timeout

    sandbox.set_faults("hubspot.contacts.search:status=429,count=1;hubspot.associations.batch_read:drop,count=1;"
                       "hubspot.contacts.batch_read:status=502,count=1")
    second = run_sync(conn, engine)  # the pending lead is re-read by id and written
    assert bad in second.ids and not second.failed
    assert state.pending_ids(engine, "hubspot") == []
    assert conn.api_usage()["retries"].get("contacts.search") == 1
    contacts = sandbox_state(sandbox).hubspot.tables["contacts"].records
    assert all(contacts[i].get("leadflow_lead_score") for i in ids)


def test_hubspot_quarantine_names_record_and_field(sandbox, engine):
    conn = connector_for_sandbox(sandbox, "hubspot", engine, retry=fast_retry())
    hubspot_setup(conn)
    ids = seed_hubspot(sandbox, 5)
    sandbox_state(sandbox).hubspot.tables["contacts"].records[ids[2]]["leadflow_lead_score"] = "140"
    out = run_sync(conn, engine)
    assert len(out.ids) == 4 and ids[2] not in out.ids and out.quarantined == 1
    assert out.read == 5  # a run's read count holds its quarantined leads
    details = state.pending_details(engine, "hubspot")
    assert details[ids[2]]["kind"] == "quarantined"
    assert details[ids[2]]["reason"] == f"hubspot:{ids[2]}: leadflow_lead_score: expected a number in 0-100, got 140"


def test_salesforce_faults_lose_nothing(sandbox, engine):
    conn = connector_for_sandbox(sandbox, "salesforce", engine, retry=fast_retry(), timeout=0.5)
    ids = seed_salesforce(sandbox, 50)
    bad = ids[3]
    sandbox.set_faults(
        "salesforce.query:status=503,count=1;"
        "salesforce.query_more:status=500,count=1;"
        "salesforce.composite.update:record_error=UNABLE_TO_LOCK_ROW,rate=0.3,count=20;"
        f"salesforce.composite.update:record_error=FIELD_CUSTOM_VALIDATION_EXCEPTION,ids={bad},message=Score too high;"
        "salesforce.session:expire_after=4"
    )
    first = run_sync(conn, engine)
    assert first.read == 50
    assert set(first.failed) == {bad} and first.failed[bad].startswith(f"salesforce:{bad}: ")
    assert "FIELD_CUSTOM_VALIDATION_EXCEPTION" in first.failed[bad]
    assert conn.reauthentications >= 1
    sandbox.set_faults(None)
    second = run_sync(conn, engine)
    assert bad in second.ids and not second.failed
    leads = sandbox_state(sandbox).salesforce.tables["Lead"].records
    assert all(leads[i].get("Lead_Score__c") is not None for i in ids)


def test_daily_quota_stops_cleanly(sandbox, engine):
    hs = connector_for_sandbox(sandbox, "hubspot", engine, retry=fast_retry())
    hubspot_setup(hs)
    seed_hubspot(sandbox, 5)
    sandbox.set_rate_limits("hubspot_daily=1")
    sandbox.reset_limits()
    with pytest.raises(QuotaExhausted, match="daily"):
        list(hs.iter_pages(None, None))
    sf = connector_for_sandbox(sandbox, "salesforce", engine, retry=fast_retry())
    seed_salesforce(sandbox, 3)
    sandbox.set_rate_limits("salesforce_daily=0")
    with pytest.raises(QuotaExhausted, match="REQUEST_LIMIT_EXCEEDED"):
        list(sf.iter_pages(None, None))


def test_run_budget_stops_before_the_call(sandbox, engine):
    sf = connector_for_sandbox(sandbox, "salesforce", engine, retry=fast_retry(), max_calls=1, page_size=10)
    seed_salesforce(sandbox, 30)
    sandbox.reset_stats()
    out = run_sync(sf, engine)  # the read was the one call: the page's write is not sent
    assert out.summary.outcome == "stopped_early" and out.written == 0
    assert out.summary.stopped_early.startswith("API budget of 1 calls for this run is spent")
    assert state.get_watermark(engine, "salesforce", "Lead") is None  # the next run re-reads the window
    assert sf.api_usage()["budget"] == {"limit": 1, "used": 1}


def test_a_budget_spent_while_retrying_pending_leads_stops_the_run_cleanly(sandbox, engine):
    sf = connector_for_sandbox(sandbox, "salesforce", engine, retry=fast_retry(), max_calls=1, page_size=10)
    ids = seed_salesforce(sandbox, 5)
    state.mark_pending(engine, "salesforce", {i: "salesforce: earlier failure" for i in ids}, kind="write_failed")
    out = run_sync(sf, engine)  # the by-id read is the one call: its writes are not sent
    assert out.summary.outcome == "stopped_early" and out.written == 0
    assert set(state.pending_ids(engine, "salesforce")) == set(ids)  # still there for the next run


def test_bad_token_fails_the_call_not_each_record(sandbox, engine):
    from hubspot.crm.contacts import ApiException
    from pydantic import SecretStr

    from connectors.crm.base import FieldChange, LeadUpdate
    from connectors.crm.hubspot import HubSpotConfig, HubSpotConnector

    ids = seed_hubspot(sandbox, 3)
    bad = HubSpotConnector(HubSpotConfig(access_token=SecretStr("wrong-token"), host=sandbox.url), engine,
                           retry=fast_retry())
    updates = [LeadUpdate(i, "lead", i, {"leadflow_lead_score": "5"},
                          [FieldChange(i, "lead_score", "leadflow_lead_score", None, "5")]) for i in ids]
    from state import fences

    # the sync marker known to exist (else its check would be the call that fails): straight to the write
    fences.confirm_property(engine, "hubspot", "contacts", "leadflow_synced_at")
    sandbox.reset_stats()
    with pytest.raises(ApiException) as info:
        bad.write_updates(updates)
    assert info.value.status == 401 and "wrong-token" not in str(info.value)
    assert calls(sandbox, "hubspot.") == {"hubspot.contacts.batch_update": 1}  # not bisected per record


def test_calls_another_app_made_in_the_window_take_the_limiters_slots_too(sandbox, engine):
    """The portal's window is shared: another app's 8 calls just before the run leave 2 of 10, and the
    connector (limited to the same 10 per second) learns it from X-HubSpot-RateLimit-Remaining."""
    hubspot_setup(connector_for_sandbox(sandbox, "hubspot", engine))
    seed_hubspot(sandbox, 60)
    conn = connector_for_sandbox(sandbox, "hubspot", engine, retry=fast_retry(), burst_limit=10, burst_period=1.0,
                                 batch_size=5)  # companies read 5 at a time: a dozen calls in the first second
    other_app = sandbox.hubspot_client()
    sandbox.set_rate_limits("hubspot=10/1s")
    sandbox.reset_limits()
    sandbox.reset_stats()
    for _ in range(8):
        other_app.crm.contacts.basic_api.get_page(limit=1)
    leads = [lead for page in conn.iter_pages(None, None) for lead in page.leads]  # list pages, batch reads
    assert len(leads) == 60
    statuses = {status for counts in sandbox.stats()["endpoints"].values() for status in counts}
    assert statuses == {"200"}, sandbox.stats()  # never a 429
    assert conn.api_usage()["retries"] == {}


def test_client_side_limiter_keeps_under_the_sandbox_limit(sandbox, engine):
    hubspot_setup(connector_for_sandbox(sandbox, "hubspot", engine))
    seed_hubspot(sandbox, 60)
    sandbox.set_rate_limits("hubspot=8/1s,hubspot_search=3/1s")
    sandbox.reset_limits()
    # the server's own limit: a slot is free again a window after the call's answer, so after the
    # server counted it, whenever that was
    conn = connector_for_sandbox(sandbox, "hubspot", engine, retry=fast_retry(), burst_limit=8, burst_period=1.0,
                                 search_per_second=2, page_size=20)
    sandbox.reset_stats()
    from datetime import datetime, timedelta, timezone

    leads = [lead for page in conn.iter_pages(datetime.now(timezone.utc) - timedelta(days=1), None) for lead in page.leads]
    assert len(leads) == 60
    statuses = {status for counts in sandbox.stats()["endpoints"].values() for status in counts}
    assert statuses == {"200"}, sandbox.stats()  # never a 429
    assert conn.api_usage()["retries"] == {}
