"""``skip_own_writes``: Salesforce window reads leave out leads last modified by leadflow's
integration user (``LastModifiedById != <user>``), against the sandbox through the real
simple-salesforce. A person's edit (the sandbox's sales rep) after leadflow's write is read."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from crm_harness import calls, fast_retry, run_sync, seed_salesforce

from connectors.crm import salesforce as sf_module
from connectors.crm.factory import connector_for_sandbox, connector_from_env, salesforce_config_from_env
from connectors.crm.salesforce import SalesforceConfigError, SalesforceConnector
from sandbox.salesforce import REP_USER_ID, USER_ID

LEADS = 60
ENV = ["SALESFORCE_INSTANCE_URL", "SALESFORCE_USERNAME", "SALESFORCE_PASSWORD", "SALESFORCE_SECURITY_TOKEN",
       "SALESFORCE_CLIENT_ID", "SALESFORCE_CLIENT_SECRET", "SALESFORCE_SESSION_ID", "PREFECT_API_URL",
       "LEADFLOW_SALESFORCE_SKIP_OWN_WRITES", "LEADFLOW_SALESFORCE_USER_ID", "LEADFLOW_SALESFORCE_BULK_THRESHOLD"]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


def connector(sandbox: Any, engine: Any, **options: Any) -> SalesforceConnector:
    """A fresh connector, as each flow run builds one."""
    options.setdefault("retry", fast_retry())
    return connector_for_sandbox(sandbox, "salesforce", engine, **options)


def full_run_then_incremental(sandbox: Any, engine: Any, **options: Any) -> tuple[Any, Any, dict[str, int]]:
    """A first run that writes every lead, then the next run inside the lookback window, and the
    CRM calls of that second run."""
    seed_salesforce(sandbox, LEADS)
    first = run_sync(connector(sandbox, engine, **options), engine)
    sandbox.reset_stats()
    second = run_sync(connector(sandbox, engine, **options), engine)
    return first, second, calls(sandbox, "salesforce.")


def edit(client: Any, lead_ids: list[str], title: str) -> None:
    records = [{"attributes": {"type": "Lead"}, "id": i, "Title": title} for i in lead_ids]
    client.restful("composite/sobjects", method="PATCH", json={"allOrNone": False, "records": records})


# ------------------------------------------------------------------------------ echoes: off vs on


def test_off_the_next_run_rereads_every_lead_it_wrote(sandbox, engine):
    first, second, used = full_run_then_incremental(sandbox, engine)
    assert first.written == LEADS and not first.failed
    assert second.read == LEADS and second.written == 0 and second.tasks_created == 0  # the echoes' cost
    assert used == {"salesforce.query": 1}


def test_on_the_next_run_reads_none_of_its_own_writes(sandbox, engine):
    first, second, used = full_run_then_incremental(sandbox, engine, skip_own_writes=True)
    assert first.written == LEADS and not first.failed
    assert second.read == 0 and second.written == 0 and second.ids == []
    assert used == {"salesforce.query": 1, "salesforce.userinfo": 1}


def test_a_pinned_user_id_needs_no_userinfo_call(sandbox, engine):
    _first, second, used = full_run_then_incremental(sandbox, engine, skip_own_writes=True,
                                                     integration_user_id=USER_ID[:15])
    assert second.read == 0
    assert used == {"salesforce.query": 1}


def test_environment_turns_it_on_and_pins_the_id(sandbox, engine, monkeypatch):
    monkeypatch.setenv("SALESFORCE_INSTANCE_URL", sandbox.url)
    monkeypatch.setenv("SALESFORCE_SESSION_ID", sandbox.credentials.session_id)
    monkeypatch.setenv("LEADFLOW_SALESFORCE_SKIP_OWN_WRITES", "on")
    seed_salesforce(sandbox, LEADS)
    run_sync(connector_from_env("salesforce", engine, retry=fast_retry()), engine)
    sandbox.reset_stats()
    assert run_sync(connector_from_env("salesforce", engine, retry=fast_retry()), engine).read == 0
    assert calls(sandbox, "salesforce.") == {"salesforce.query": 1, "salesforce.userinfo": 1}
    monkeypatch.setenv("LEADFLOW_SALESFORCE_USER_ID", USER_ID)
    sandbox.reset_stats()
    assert run_sync(connector_from_env("salesforce", engine, retry=fast_retry()), engine).read == 0
    assert calls(sandbox, "salesforce.") == {"salesforce.query": 1}


def login_options(sandbox: Any, login: str) -> dict[str, Any]:
    from pydantic import SecretStr

    from leadflow.http_session import SANDBOX_LOGIN_DOMAIN

    creds = sandbox.credentials
    if login == "session":
        return {"session_id": SecretStr(creds.session_id)}
    if login == "password":
        return {"username": creds.username, "password": SecretStr(creds.password), "domain": "login"}
    return {"session_id": None, "client_id": creds.client_id, "client_secret": SecretStr(creds.client_secret),
            "domain": SANDBOX_LOGIN_DOMAIN}


@pytest.mark.parametrize("login", ["session", "password", "client_credentials"])
def test_the_user_is_discovered_with_every_login(sandbox, engine, login):
    conn = connector(sandbox, engine, skip_own_writes=True, **login_options(sandbox, login))
    assert conn.own_user_id() == USER_ID
    assert conn.own_user_id() == USER_ID and calls(sandbox, "salesforce.userinfo") == {"salesforce.userinfo": 1}
    assert conn.api_usage()["by_endpoint"]["userinfo"] == 1


def test_an_expired_session_logs_in_again_before_asking(sandbox, engine):
    conn = connector(sandbox, engine, skip_own_writes=True)  # a session id, and username-password to log in
    sandbox.expire_salesforce_sessions()
    assert conn.own_user_id() == USER_ID and conn.reauthentications == 1


# ------------------------------------------------------------------------------ whose edit is read


def test_a_reps_edit_after_leadflows_write_is_read_and_requalified(sandbox, engine):
    ids = seed_salesforce(sandbox, LEADS)
    first = run_sync(connector(sandbox, engine, skip_own_writes=True), engine)
    assert first.written == LEADS
    edit(sandbox.salesforce_client(user="rep"), ids[:2], "Chief Medical Officer")
    edit(sandbox.salesforce_client(), ids[2:4], "Chief Medical Officer")  # the integration user: not read
    org = sandbox.state.salesforce.tables["Lead"].records
    assert [org[i]["LastModifiedById"] for i in ids[:4]] == [REP_USER_ID] * 2 + [USER_ID] * 2

    second = run_sync(connector(sandbox, engine, skip_own_writes=True), engine)
    assert sorted(second.ids) == sorted(ids[:2])
    assert second.written == 2  # the new title changes their scores: written back
    assert {org[i]["LastModifiedById"] for i in ids[:2]} == {USER_ID}

    sandbox.reset_stats()
    third = run_sync(connector(sandbox, engine, skip_own_writes=True), engine)
    assert third.read == 0
    assert calls(sandbox, "salesforce.") == {"salesforce.query": 1, "salesforce.userinfo": 1}


def test_pending_leads_are_reread_by_id_whoever_modified_them(sandbox, engine):
    from state import leads as state

    ids = seed_salesforce(sandbox, 5)
    run_sync(connector(sandbox, engine, skip_own_writes=True), engine)
    state.mark_pending(engine, "salesforce", {ids[0]: "write failed"})
    out = run_sync(connector(sandbox, engine, skip_own_writes=True), engine)
    assert out.ids == [ids[0]]


# ------------------------------------------------------------------------------ binding and validation


def test_the_user_id_is_bound_with_format_soql(sandbox, engine, monkeypatch):
    seed_salesforce(sandbox, 5)
    conn = connector(sandbox, engine, skip_own_writes=True)
    crafted = f"{USER_ID}' OR LastModifiedById != '"
    monkeypatch.setattr(conn, "own_user_id", lambda: crafted)
    until = datetime.now(timezone.utc) + timedelta(seconds=1)
    soql = conn.window_soql(None, until)
    assert soql.endswith(f"AND LastModifiedById != '{USER_ID}\\' OR LastModifiedById != \\'' "
                         "ORDER BY SystemModstamp, Id")
    pages = list(conn.iter_pages(None, until))  # one comparison with an odd value: every lead matches
    assert sum(len(page.leads) for page in pages) == 5


def test_a_crafted_userinfo_answer_is_refused(sandbox, engine, monkeypatch):
    conn = connector(sandbox, engine, skip_own_writes=True)
    monkeypatch.setattr(conn, "_userinfo", lambda sf: {"user_id": f"{USER_ID}' OR Id != '"})
    with pytest.raises(SalesforceConfigError, match="userinfo"):
        conn.window_soql(None, None)


def test_invalid_settings_are_refused_naming_them(engine, monkeypatch):
    monkeypatch.setenv("SALESFORCE_INSTANCE_URL", "https://acme.my.salesforce.com")
    monkeypatch.setenv("SALESFORCE_SESSION_ID", "00D!token")
    monkeypatch.setenv("LEADFLOW_SALESFORCE_USER_ID", f"{USER_ID}' OR Id != '")
    with pytest.raises(SalesforceConfigError, match="LEADFLOW_SALESFORCE_USER_ID"):
        salesforce_config_from_env()
    for bad in ("0015g00000BxYZaAAN", "005short", "0055g00000BxYZaAANX"):  # an Account id, 8 and 19 characters
        monkeypatch.setenv("LEADFLOW_SALESFORCE_USER_ID", bad)
        with pytest.raises(SalesforceConfigError, match="LEADFLOW_SALESFORCE_USER_ID"):
            salesforce_config_from_env()
    monkeypatch.setenv("LEADFLOW_SALESFORCE_USER_ID", USER_ID[:15])
    monkeypatch.setenv("LEADFLOW_SALESFORCE_SKIP_OWN_WRITES", "maybe")
    with pytest.raises(SalesforceConfigError, match="LEADFLOW_SALESFORCE_SKIP_OWN_WRITES"):
        salesforce_config_from_env()
    for raw, expected in (("1", True), ("TRUE", True), ("on", True), ("0", False), ("off", False), ("", False)):
        monkeypatch.setenv("LEADFLOW_SALESFORCE_SKIP_OWN_WRITES", raw)
        config = salesforce_config_from_env()
        assert (config.skip_own_writes, config.integration_user_id) == (expected, USER_ID[:15])
    with pytest.raises(SalesforceConfigError, match="integration_user_id"):
        sf_module.SalesforceConfig(instance_url="https://acme.my.salesforce.com", integration_user_id="005' OR 1")


def test_off_by_default_and_the_filter_only_in_window_reads(sandbox, engine):
    assert sf_module.SalesforceConfig(instance_url="").skip_own_writes is False
    assert "LastModifiedById" not in connector(sandbox, engine).window_soql(None, None)
    conn = connector(sandbox, engine, skip_own_writes=True, integration_user_id=USER_ID)
    assert f"LastModifiedById != '{USER_ID}'" in conn.window_soql(None, None, ordered=False)


# ------------------------------------------------------------------------------ the bulk read


def test_the_bulk_job_carries_the_same_filter(sandbox, engine, monkeypatch):
    ids = seed_salesforce(sandbox, 2_300)  # the first REST batch (2,000) must leave some for the job
    ours = ids[-300:-100]
    edit(sandbox.salesforce_client(), ours, "Integration edit")
    conn = connector(sandbox, engine, skip_own_writes=True, bulk_threshold=100, bulk_poll_interval=0.001,
                     mark_reads=False)
    jobs: list[str] = []
    create = sf_module.BulkQuery._create
    monkeypatch.setattr(sf_module.BulkQuery, "_create", lambda self, soql: jobs.append(soql) or create(self, soql))
    sandbox.reset_stats()
    until = datetime.now(timezone.utc) + timedelta(seconds=1)
    read = [lead.crm_id for page in conn.iter_pages(None, until) for lead in page.leads]
    assert sorted(read) == sorted(set(ids) - set(ours))
    assert jobs == [conn.window_soql(None, until, ordered=False)]
    assert jobs[0].endswith(f" AND LastModifiedById != '{USER_ID}'") and "ORDER BY" not in jobs[0]
    used = calls(sandbox, "salesforce.")
    assert used["salesforce.query"] == 2 and used["salesforce.bulk2.query_create"] == 1  # + campaign responses
    assert used["salesforce.userinfo"] == 1  # asked once, for the REST query and the job


def test_the_bench_minimum_counts_the_userinfo_call(monkeypatch):
    from benchmarks.bench import minimum_calls

    assert minimum_calls("salesforce", "no_change", {}) == {"read": 1, "total": 1}
    monkeypatch.setenv("LEADFLOW_SALESFORCE_SKIP_OWN_WRITES", "1")
    assert minimum_calls("salesforce", "no_change", {}) == {"read": 1, "userinfo": 1, "total": 2}
    assert minimum_calls("hubspot", "no_change", {}) == {"read": 1, "total": 1}
    monkeypatch.setenv("LEADFLOW_SALESFORCE_USER_ID", USER_ID)
    assert minimum_calls("salesforce", "no_change", {}) == {"read": 1, "total": 1}
