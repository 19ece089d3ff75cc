"""Salesforce users in the sandbox: the integration user and a sales rep, each session's writes
stamped with its user (``LastModifiedById``/``CreatedById``), UserInfo, and SOQL on the fields."""

from __future__ import annotations

from datetime import datetime

import pytest
from simple_salesforce import format_soql
from simple_salesforce.exceptions import SalesforceExpiredSession, SalesforceMalformedRequest
from simple_salesforce.util import exception_handler

from sandbox.salesforce import ORG_ID, REP, REP_USER_ID, USER_ID


def userinfo(sf) -> dict:
    response = sf.session.get(f"https://{sf.sf_instance}/services/oauth2/userinfo", headers=sf.headers)
    if response.status_code >= 300:
        exception_handler(response, "userinfo")
    return response.json()


def audit(sf, record_id: str, obj: str = "Lead") -> dict:
    soql = format_soql(f"SELECT Id, CreatedById, LastModifiedById, LastModifiedDate, SystemModstamp FROM {obj} "
                       "WHERE Id = {}", record_id)
    return sf.query(soql)["records"][0]


@pytest.fixture(scope="module")
def rep(sandbox_server):
    return sandbox_server.salesforce_client(user="rep")


@pytest.mark.parametrize("flow", ["session", "password", "oauth_password"])
def test_userinfo_names_the_logged_in_user(sandbox_server, flow):
    for user, user_id, username in (("integration", USER_ID, sandbox_server.salesforce.username),
                                    ("rep", REP_USER_ID, REP.username)):
        info = userinfo(sandbox_server.salesforce_client(flow, user=user))
        assert info["user_id"] == user_id and info["preferred_username"] == username, (flow, user)
        assert info["sub"] == f"https://login.salesforce.com/id/{ORG_ID}/{user_id}"
        assert info["organization_id"] == ORG_ID and info["name"] and info["email"]


def test_client_credentials_run_as_the_integration_user(sandbox_server):
    assert userinfo(sandbox_server.salesforce_client("client_credentials"))["user_id"] == USER_ID


def test_userinfo_needs_a_valid_bearer_token(sandbox_server):
    from sandbox.app import Credentials
    from sandbox.clients import salesforce_client

    with pytest.raises(SalesforceExpiredSession):
        userinfo(salesforce_client(sandbox_server.url, Credentials(session_id="nope")))


def test_rep_password_is_its_own(sandbox_server):
    from simple_salesforce.exceptions import SalesforceAuthenticationFailed
    from simple_salesforce import Salesforce

    from leadflow.http_session import LoopbackSession

    with pytest.raises(SalesforceAuthenticationFailed):
        Salesforce(username=REP.username, password=sandbox_server.salesforce.password, security_token="",
                   session=LoopbackSession(sandbox_server.url))


def test_seeded_records_were_made_by_the_rep(salesforce_client, sandbox_server):
    first = next(iter(sandbox_server.state.salesforce.tables["Lead"].records))
    record = audit(salesforce_client, first)
    assert record["CreatedById"] == record["LastModifiedById"] == REP_USER_ID
    assert record["LastModifiedDate"] == record["SystemModstamp"]


def test_writes_are_stamped_with_the_session_user(salesforce_client, rep):
    created = salesforce_client.restful("composite/sobjects", method="POST", json={"records": [
        {"attributes": {"type": "Lead"}, "LastName": "Audit", "Company": "Acme"}]})[0]["id"]
    lead = audit(salesforce_client, created)
    assert lead["CreatedById"] == lead["LastModifiedById"] == USER_ID

    rep.Lead.update(created, {"Title": "CFO"})  # single-record PATCH
    lead = audit(salesforce_client, created)
    assert (lead["CreatedById"], lead["LastModifiedById"]) == (USER_ID, REP_USER_ID)
    assert lead["LastModifiedDate"] == lead["SystemModstamp"]

    salesforce_client.restful("composite/sobjects", method="PATCH", json={"records": [
        {"attributes": {"type": "Lead"}, "id": created, "Title": "CEO"}]})
    assert audit(salesforce_client, created)["LastModifiedById"] == USER_ID

    by_rep = rep.Lead.create({"LastName": "Rep", "Company": "Acme"})["id"]  # single-record POST
    assert audit(rep, by_rep)["CreatedById"] == REP_USER_ID
    task = rep.restful("composite/sobjects", method="POST", json={"records": [
        {"attributes": {"type": "Task"}, "WhoId": by_rep, "Subject": "Call", "Status": "Not Started",
         "Priority": "Normal"}]})[0]["id"]
    assert audit(salesforce_client, task, "Task")["LastModifiedById"] == REP_USER_ID
    salesforce_client.Task.update(task, {"Status": "Completed"})
    assert audit(salesforce_client, task, "Task")["LastModifiedById"] == USER_ID


def test_soql_not_equal_on_last_modified_by(salesforce_client, rep, sandbox_server):
    ids = [r["Id"] for r in salesforce_client.query("SELECT Id FROM Lead ORDER BY Id LIMIT 4")["records"]]
    salesforce_client.restful("composite/sobjects", method="PATCH", json={"records": [
        {"attributes": {"type": "Lead"}, "id": i, "Title": "Integration edit"} for i in ids[:3]]})
    rep.Lead.update(ids[0], {"Title": "Rep edit"})
    since = datetime.strptime(audit(salesforce_client, ids[1])["SystemModstamp"], "%Y-%m-%dT%H:%M:%S.%f%z")
    not_ours = format_soql("SELECT Id FROM Lead WHERE SystemModstamp >= {} AND LastModifiedById != {}", since, USER_ID)
    found = {r["Id"] for r in salesforce_client.query_all(not_ours + " ORDER BY SystemModstamp, Id")["records"]}
    assert ids[0] in found and not found & set(ids[1:3])
    ours = format_soql("SELECT Id FROM Lead WHERE LastModifiedById = {}", USER_ID[:15])  # 15-char id form
    assert set(ids[1:3]) <= {r["Id"] for r in salesforce_client.query_all(ours)["records"]}
    total = salesforce_client.query("SELECT COUNT() FROM Lead")["totalSize"]
    others = format_soql("SELECT COUNT() FROM Lead WHERE LastModifiedById != {}", USER_ID)
    assert salesforce_client.query(others)["totalSize"] == total - len(
        [r for r in sandbox_server.state.salesforce.tables["Lead"].records.values()
         if r.get("LastModifiedById") == USER_ID])


def test_audit_fields_are_described_and_read_only(salesforce_client):
    fields = {f["name"]: f for f in salesforce_client.Lead.describe()["fields"]}
    for name in ("CreatedById", "LastModifiedById"):
        assert fields[name]["type"] == "reference" and fields[name]["referenceTo"] == ["User"]
        assert not fields[name]["updateable"] and not fields[name]["createable"]
    assert fields["LastModifiedDate"]["type"] == "datetime"
    assert "LastModifiedById" in {f["name"] for f in salesforce_client.Task.describe()["fields"]}
    lead = salesforce_client.query("SELECT Id FROM Lead LIMIT 1")["records"][0]["Id"]
    with pytest.raises(SalesforceMalformedRequest) as err:
        salesforce_client.Lead.update(lead, {"LastModifiedById": REP_USER_ID})
    assert err.value.content[0]["errorCode"] == "INVALID_FIELD_FOR_INSERT_UPDATE"
