"""Salesforce window reads above ``bulk_threshold``: the first REST batch, then one Bulk API 2.0
query job, against the sandbox through the real simple-salesforce."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from crm_harness import calls, fast_retry, run_sync, sandbox_state, seed_salesforce

from connectors.crm import salesforce as sf_module
from connectors.crm.factory import connector_for_sandbox, salesforce_config_from_env
from connectors.crm.salesforce import BulkQueryError, SalesforceConfigError, SalesforceConnector, csv_records
from sandbox import start_sandbox
from sandbox.store import now_ms

BULK = {"bulk_threshold": 1_000, "bulk_max_records": 700, "bulk_poll_interval": 0.001}
REST_BATCH = 2_000  # the sandbox's query batch for leadflow's SELECT


def _connector(sandbox: Any, engine: Any, **options: Any) -> SalesforceConnector:
    options.setdefault("retry", fast_retry())
    return connector_for_sandbox(sandbox, "salesforce", engine, mark_reads=False, **options)


def _read(conn: SalesforceConnector, since: datetime | None = None, until: datetime | None = None) -> list[Any]:
    return list(conn.iter_pages(since, until or datetime.now(timezone.utc) + timedelta(seconds=1)))


def _ids(pages: list[Any]) -> list[str]:
    return [lead.crm_id for page in pages for lead in page.leads]


def _crm_calls(sandbox: Any) -> dict[str, int]:
    return calls(sandbox, "salesforce.")


# ------------------------------------------------------------------------------ which path, how many calls


def test_above_threshold_reads_each_lead_once_rest_first_batch_then_bulk(sandbox, engine):
    seeded = seed_salesforce(sandbox, 5_000)
    conn = _connector(sandbox, engine, **BULK)
    sandbox.reset_stats()
    pages = _read(conn)
    ids = _ids(pages)
    assert len(ids) == len(set(ids)) == 5_000 and set(ids) == set(seeded)
    assert ids[:REST_BATCH] == seeded[:REST_BATCH]  # the REST batch, in modification order
    assert [p.cursor is None for p in pages] == [False] + [True] * (len(pages) - 1)
    assert all(len(p.leads) <= conn.config.page_size for p in pages)
    used = _crm_calls(sandbox)
    # the bulk rows' campaign responses: one semi-join CampaignMember query for the window (calls
    # and meetings only for leads with a LastActivityDate: none here)
    members = 1
    assert used == {"salesforce.query": 1 + members, "salesforce.bulk2.query_create": 1,
                    "salesforce.bulk2.query_get": 2, "salesforce.bulk2.query_results": 8}  # ceil(5,000 / 700) sets
    metered = conn.api_usage()["by_endpoint"]
    assert {k: v for k, v in metered.items() if k != "login"} == {"query": 1 + members, "bulk.create": 1,
                                                                 "bulk.poll": 2, "bulk.results": 8}
    assert conn.api_usage()["quota"]["daily_used"] == sum(used.values())  # Sforce-Limit-Info read on every call


def test_below_threshold_pages_with_rest_and_creates_no_job(sandbox, engine):
    seeded = seed_salesforce(sandbox, 5_000)
    conn = _connector(sandbox, engine, bulk_threshold=5_000)  # totalSize must be above it
    sandbox.reset_stats()
    pages = _read(conn)
    assert _ids(pages) == seeded
    assert _crm_calls(sandbox) == {"salesforce.query": 1, "salesforce.query_more": 2}
    assert all(p.cursor is not None for p in pages)


@pytest.mark.parametrize("threshold", [None, 0])
def test_bulk_off(sandbox, engine, threshold):
    seed_salesforce(sandbox, 2_100)
    conn = _connector(sandbox, engine, bulk_threshold=threshold)
    sandbox.reset_stats()
    assert len(_ids(_read(conn))) == 2_100
    assert not any(name.startswith("salesforce.bulk2") for name in _crm_calls(sandbox))


def test_a_window_that_fits_one_rest_batch_needs_no_job(sandbox, engine):
    seed_salesforce(sandbox, 300)
    conn = _connector(sandbox, engine, **dict(BULK, bulk_threshold=200))
    sandbox.reset_stats()
    assert len(_ids(_read(conn))) == 300
    assert _crm_calls(sandbox) == {"salesforce.query": 1}


def test_sync_above_threshold_writes_every_lead_once(sandbox, engine):
    seeded = seed_salesforce(sandbox, 2_600)
    conn = connector_for_sandbox(sandbox, "salesforce", engine, retry=fast_retry(), **BULK)
    first = run_sync(conn, engine)
    assert first.read == 2_600 and sorted(first.ids) == sorted(seeded) and not first.failed
    leads = sandbox_state(sandbox).salesforce.tables["Lead"].records
    assert all(leads[i].get("Lead_Score__c") is not None for i in seeded)
    assert "salesforce.bulk2.query_results" in _crm_calls(sandbox)


# ------------------------------------------------------------------------------ same leads by REST and bulk


def _awkward_records() -> list[dict[str, Any]]:
    stamp = 1_790_000_000_123
    return [
        {"Company": 'O\'Brien, "Sons" & Co', "Title": "Chief, Medical\nOfficer", "FirstName": None,
         "Pain_Point__c": "line one\nline two, with \"quotes\"\r\nand CRLF", "Need_Confirmed__c": True,
         "Bed_Count__c": 120.0, "Provider_Count__c": 12.6, "Lead_Kind__c": "B2B", "LeadSource": "Employee Referral",
         "Demo_Requested_At__c": stamp, "Visit_Count__c": 7.0, "Last_Visit_At__c": stamp + 1_000},
        {"Company": "Klinikum Müller – Zürich", "Title": "Ärztlicher Direktor", "City": "Zürich",
         "Score_Reasons__c": "Titel passt; Demo angefragt", "Timeline_Confirmed__c": False,
         "Lead_Score__c": 55.0, "Fit_Score__c": 0.0, "Lead_Stage__c": "MQL", "Org_Type__c": "Hospital",
         "Scored_At__c": stamp, "Score_Model_Version__c": "m-1", "Next_Step__c": "Call, then email"},
        {"Company": "病院グループ", "Title": None, "Email": None, "Website": "https://example.jp/a,b?c=\"d\"",
         "Sales_Accepted__c": True, "Patient_Scheduling_Ready__c": False, "Location_Count__c": 3.0,
         "Form_Fill_Count__c": 2.0, "Last_Form_Fill_At__c": stamp - 86_400_000, "Industry": "Healthcare"},
        {"Company": "Plain Co", "LastName": "Ng", "Budget_Status__c": "None", "Manual_Stage__c": "SQL",
         "Pain_Point__c": None, "Bed_Count__c": None},
    ]


def _by_id(pages: list[Any]) -> dict[str, tuple[Any, dict[str, Any]]]:
    return {lead.crm_id: (lead, page.current[lead.crm_id]) for page in pages for lead in page.leads}


def test_rest_and_bulk_give_equal_leads_and_current_values(sandbox, engine):
    seed_salesforce(sandbox, REST_BATCH)  # the first REST batch: the records below come by bulk
    awkward = [seed_salesforce(sandbox, 1, extra=record)[0] for record in _awkward_records()]
    by_rest = _by_id(_read(_connector(sandbox, engine, bulk_threshold=None)))
    sandbox.reset_stats()
    by_bulk = _by_id(_read(_connector(sandbox, engine, **BULK)))
    assert "salesforce.bulk2.query_results" in _crm_calls(sandbox)
    assert by_bulk.keys() == by_rest.keys()
    for crm_id in awkward:
        (rest_lead, rest_current), (bulk_lead, bulk_current) = by_rest[crm_id], by_bulk[crm_id]
        assert bulk_lead == rest_lead, crm_id
        assert bulk_current == rest_current, crm_id
        assert [type(v) for v in bulk_current.values()] == [type(v) for v in rest_current.values()], crm_id
    first = by_bulk[awkward[0]][0]
    assert first.company_name == 'O\'Brien, "Sons" & Co' and first.job_title == "Chief, Medical\nOfficer"
    assert by_bulk[awkward[1]][0].company_name == "Klinikum Müller – Zürich"
    assert by_bulk[awkward[1]][1]["Scored_At__c"].endswith("+0000")
    assert all(by_bulk[i][0] == by_rest[i][0] for i in by_rest)


def test_csv_values_are_typed_as_rest_json():
    kinds = {"B": "bool", "N": "number", "D": "datetime", "T": "string"}
    text = 'B,N,D,T\n"true","12.0","2026-01-05T12:34:56.000Z","a,""b""\nc"\n"false","250","",""\n'
    assert csv_records(text, kinds) == [
        {"B": True, "N": 12.0, "D": "2026-01-05T12:34:56.000+0000", "T": 'a,"b"\nc'},
        {"B": False, "N": 250, "D": None, "T": None},
    ]
    assert csv_records("", kinds) == [] and csv_records("B,N\n", kinds) == []
    assert csv_records("N\nabc\n", kinds) == [{"N": "abc"}]  # left for conversion to quarantine, naming the field


# ------------------------------------------------------------------------------ faults, failures, timeouts


def test_500s_and_expired_sessions_in_bulk_calls_are_retried_without_loss(sandbox, engine):
    seeded = seed_salesforce(sandbox, 3_000)
    conn = _connector(sandbox, engine, **BULK)
    sandbox.set_faults("salesforce.bulk2.query_results:status=500,count=2;"
                       "salesforce.bulk2.query_get:status=503,count=1;"
                       "salesforce.bulk2.query_create:status=500,count=1")
    ids = _ids(_read(conn))
    assert len(ids) == len(set(ids)) == 3_000 and set(ids) == set(seeded)
    retries = conn.api_usage()["retries"]
    assert retries == {"bulk.results": 2, "bulk.poll": 1, "bulk.create": 1}

    sandbox.set_faults("salesforce.bulk2.query_results:status=401,count=1;"
                       "salesforce.bulk2.query_get:status=401,count=1")
    relogged = conn.reauthentications
    ids = _ids(_read(conn))
    assert len(ids) == len(set(ids)) == 3_000
    assert conn.reauthentications == relogged + 2


def test_sessions_expiring_every_few_calls_lose_nothing(sandbox, engine):
    seeded = seed_salesforce(sandbox, 3_000)
    conn = _connector(sandbox, engine, **BULK)
    sandbox.set_faults("salesforce.session:expire_after=3")
    ids = _ids(_read(conn))
    assert len(ids) == len(set(ids)) == 3_000 and set(ids) == set(seeded)
    assert conn.reauthentications >= 1
    assert calls(sandbox, "salesforce.bulk2.query_results")["salesforce.bulk2.query_results"] >= 5


def test_a_failed_job_raises_with_its_error_message(sandbox, engine):
    seed_salesforce(sandbox, 2_100)
    sandbox_state(sandbox).salesforce.bulk_job_error = "Query timed out after 120 s"
    conn = _connector(sandbox, engine, **BULK)
    pages = conn.iter_pages(None, datetime.now(timezone.utc) + timedelta(seconds=1))
    assert len(next(pages).leads) == REST_BATCH
    with pytest.raises(BulkQueryError) as err:
        next(pages)
    job_id = next(iter(sandbox_state(sandbox).salesforce.jobs))
    assert str(err.value) == f"salesforce: Bulk API 2.0 query job {job_id} ended Failed: Query timed out after 120 s"


def test_polls_back_off_doubling_to_ten_seconds(sandbox, engine):
    seed_salesforce(sandbox, 2_100)
    sandbox_state(sandbox).salesforce.bulk_job_polls = 8
    waits: list[float] = []
    conn = _connector(sandbox, engine, **dict(BULK, bulk_poll_interval=1.0), retry=fast_retry(sleep=waits.append))
    assert len(_ids(_read(conn))) == 2_100
    assert waits == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]


def test_a_job_not_complete_in_time_is_aborted(sandbox, engine):
    seed_salesforce(sandbox, 2_100)
    org = sandbox_state(sandbox).salesforce
    org.bulk_job_polls = 10**9
    conn = _connector(sandbox, engine, **dict(BULK, bulk_poll_interval=0.01, bulk_timeout=0.1),
                      retry=fast_retry(sleep=time.sleep))
    started = time.monotonic()
    with pytest.raises(BulkQueryError, match=r"job 750\w+ not complete after 0.1 s \(state InProgress\): aborted"):
        _read(conn)
    assert time.monotonic() - started < 5
    [job] = org.jobs.values()
    assert job["state"] == "Aborted"
    assert _crm_calls(sandbox)["salesforce.bulk2.query_abort"] == 1


# ------------------------------------------------------------------------------ the SOQL of the job


def _seed_at(sandbox: Any, stamps: list[int]) -> list[str]:
    org = sandbox_state(sandbox).salesforce
    ids = []
    for i, stamp in enumerate(stamps):
        record_id = org.next_id("Lead")
        org.tables["Lead"].insert(record_id, {"LastName": f"W{i}", "Company": "Window Co"}, stamp, stamp)
        ids.append(record_id)
    return ids


def test_bulk_job_uses_the_rest_window_builder_without_order_by(sandbox, engine, monkeypatch):
    base = (now_ms() // 1000 - 3_600) * 1000
    since = datetime.fromtimestamp(base / 1000, tz=timezone(timedelta(hours=5, minutes=30)))
    until = datetime.fromtimestamp((base + 3_000) / 1000 + 0.25, tz=timezone.utc)  # rounds up to base + 4 s
    before = _seed_at(sandbox, [base - 1] * 5)
    inside = _seed_at(sandbox, [base] * 2_000 + [base + 1_500] * 400 + [base + 3_999] * 5)
    after = _seed_at(sandbox, [base + 4_000] * 5)
    formatted: list[str] = []  # every SOQL format_soql built
    sent: list[str] = []  # the SOQL of the bulk job
    real_format, real_batches = sf_module.format_soql, sf_module.BulkQuery.batches

    def spy_format(*args: Any, **kwargs: Any) -> str:
        formatted.append(real_format(*args, **kwargs))
        return formatted[-1]

    def spy_batches(self: Any, soql: str) -> Any:
        sent.append(soql)
        return real_batches(self, soql)

    monkeypatch.setattr(sf_module, "format_soql", spy_format)
    monkeypatch.setattr(sf_module.BulkQuery, "batches", spy_batches)
    conn = _connector(sandbox, engine, **BULK)
    ids = _ids(_read(conn, since, until))
    assert sorted(ids) == sorted(inside) and len(ids) == len(set(ids))
    rest_soql, bulk_soql, members_soql = formatted  # + the bulk window's campaign responses (a semi-join)
    assert members_soql == conn.window_soql(since, until, ordered=False, select="SELECT Id FROM Lead")
    assert sent == [bulk_soql] and rest_soql == conn.window_soql(since, until)  # + activity subqueries, ORDER BY
    assert bulk_soql == conn.window_soql(since, until, ordered=False)
    start = datetime.fromtimestamp(base / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    assert f"SystemModstamp >= {start}" in bulk_soql and "ORDER BY" not in bulk_soql
    assert not set(ids) & set(before + after)


# ------------------------------------------------------------------------------ configuration


def test_bulk_threshold_from_the_environment(monkeypatch):
    monkeypatch.setenv("SALESFORCE_INSTANCE_URL", "https://acme.my.salesforce.com")
    monkeypatch.setenv("SALESFORCE_SESSION_ID", "00D!token")
    monkeypatch.delenv("LEADFLOW_SALESFORCE_BULK_THRESHOLD", raising=False)
    assert salesforce_config_from_env().bulk_threshold == 10_000
    for raw, expected in (("25000", 25_000), ("0", None), ("off", None), ("OFF", None)):
        monkeypatch.setenv("LEADFLOW_SALESFORCE_BULK_THRESHOLD", raw)
        assert salesforce_config_from_env().bulk_threshold == expected, raw
    assert salesforce_config_from_env(bulk_threshold=7).bulk_threshold == 7
    for raw in ("10k", "-5", "1e4"):
        monkeypatch.setenv("LEADFLOW_SALESFORCE_BULK_THRESHOLD", raw)
        with pytest.raises(SalesforceConfigError, match=f"LEADFLOW_SALESFORCE_BULK_THRESHOLD .*{raw!r}"):
            salesforce_config_from_env()


def test_bench_minimum_counts_the_bulk_read_above_the_threshold():
    from benchmarks.bench import minimum_calls

    assert minimum_calls("salesforce", "backfill", {"leads": 10_000})["read"] == 5  # at the threshold: REST
    assert minimum_calls("salesforce", "backfill", {"leads": 50_000})["read"] == 1 + 1 + 1 + 5
    assert minimum_calls("salesforce", "backfill", {"leads": 5_000, "bulk_threshold": None})["read"] == 3


@pytest.mark.prefect
def test_flows_backfill_and_sync_through_bulk(prefect_server, tmp_path):
    from state import leads as state
    from sandbox.environment import environment, sandbox_environment
    from flows.sync import backfill, sync_leads
    from state.schema import make_engine

    with start_sandbox(0) as sandbox:
        seeded = seed_salesforce(sandbox, 2_300)
        url = f"sqlite:///{tmp_path / 'flows.db'}"
        env = {**sandbox_environment(sandbox), "LEADFLOW_DATABASE_URL": url, "LEADFLOW_HOME": str(tmp_path),
               "LEADFLOW_SALESFORCE_BULK_THRESHOLD": "1000"}
        with environment(env):
            until = datetime.now(timezone.utc) + timedelta(seconds=1)
            filled = backfill("salesforce", since=until - timedelta(days=1), until=until)  # progress: cursor None
            assert filled["read"] == 2_300 and filled["failed"] == 0
            engine = make_engine(url)
            assert state.get_watermark(engine, "salesforce", "Lead") is None
            synced = sync_leads("salesforce")
            assert synced["failed"] == 0 and state.get_watermark(engine, "salesforce", "Lead") is not None
        used = _crm_calls(sandbox)
        assert used["salesforce.bulk2.query_create"] == 2 and "salesforce.query_more" not in used
        leads = sandbox_state(sandbox).salesforce.tables["Lead"].records
        assert all(leads[i].get("Lead_Score__c") is not None for i in seeded)
