"""Salesforce REST in the sandbox, through the real simple-salesforce (and leadflow.http_session)."""

from __future__ import annotations

import time

import pytest
from simple_salesforce import format_soql
from simple_salesforce.exceptions import (
    SalesforceAuthenticationFailed,
    SalesforceExpiredSession,
    SalesforceMalformedRequest,
    SalesforceRefusedRequest,
)

from mappings import load_mapping
from sandbox import start_sandbox
from sandbox.app import Credentials
from sandbox_support import small_seed


def _ids(result):
    return [r["Id"] for r in result["records"]]


def test_every_login_flow_reaches_the_sandbox(sandbox_server):
    for flow in ("session", "password", "oauth_password", "client_credentials"):
        sf = sandbox_server.salesforce_client(flow)
        assert sf.query("SELECT COUNT() FROM Lead")["totalSize"] == 60, flow
    stats = sandbox_server.stats()["endpoints"]
    assert stats["salesforce.oauth.token"]["200"] >= 2 and stats["salesforce.soap.login"]["200"] >= 1


def test_bad_credentials_fail_like_salesforce(sandbox_server):
    from sandbox.clients import salesforce_client

    wrong = Credentials(password="nope")
    with pytest.raises(SalesforceAuthenticationFailed) as err:
        salesforce_client(sandbox_server.url, wrong, "password")
    assert "INVALID_LOGIN" in str(err.value)
    with pytest.raises(SalesforceAuthenticationFailed) as err:
        salesforce_client(sandbox_server.url, Credentials(client_secret="nope"), "client_credentials")
    assert "invalid_client" in str(err.value)
    with pytest.raises(SalesforceExpiredSession) as err:
        salesforce_client(sandbox_server.url, Credentials(session_id="nope")).query("SELECT Id FROM Lead")
    assert err.value.content[0]["errorCode"] == "INVALID_SESSION_ID"


def test_query_where_order_limit(salesforce_client, sandbox_server):
    org = sandbox_server.state.salesforce
    ordered = [entry[2] for entry in org.tables["Lead"].by_modified()]
    stamp = salesforce_client.query(format_soql("SELECT SystemModstamp FROM Lead WHERE Id = {}", ordered[9]))
    since = stamp["records"][0]["SystemModstamp"]
    result = salesforce_client.query(
        f"SELECT Id, Email, SystemModstamp FROM Lead WHERE SystemModstamp > {since} ORDER BY SystemModstamp, Id LIMIT 5")
    assert _ids(result) == ordered[10:15]
    assert list(result["records"][0]) == ["attributes", "Id", "Email", "SystemModstamp"]
    assert result["records"][0]["SystemModstamp"].endswith("+0000")
    desc = salesforce_client.query("SELECT Id FROM Lead ORDER BY SystemModstamp DESC LIMIT 3")
    assert _ids(desc) == ordered[::-1][:3]
    email = org.tables["Lead"].records[ordered[3]]["Email"]
    query = format_soql("SELECT Id, email FROM lead WHERE (Email = {} OR Email IN {}) AND IsConverted = {} "
                        "AND Title != {}", email.upper(), ["x'y@example.org"], False, None)
    matched = salesforce_client.query(query)
    assert _ids(matched) == [ordered[3]] and "Email" in matched["records"][0]
    converted = sum(1 for r in org.tables["Lead"].records.values() if r.get("IsConverted"))  # seeded histories
    assert salesforce_client.query("SELECT COUNT() FROM Lead WHERE IsConverted = false")["totalSize"] == 60 - converted
    assert salesforce_client.query("SELECT COUNT() FROM Lead WHERE IsConverted = true")["totalSize"] == converted
    patients = salesforce_client.query("SELECT Id, Lead_Kind__c FROM Lead WHERE Lead_Kind__c = 'Patient'")
    assert patients["totalSize"] == sum(1 for r in org.tables["Lead"].records.values()
                                        if r.get("Lead_Kind__c") == "Patient") > 0
    assert salesforce_client.query("SELECT Id FROM Lead WHERE Email LIKE '%@gmail.com'")["totalSize"] == sum(
        1 for r in org.tables["Lead"].records.values() if r.get("Email", "").endswith("@gmail.com"))


def test_soql_escapes_and_literals(salesforce_client, sandbox_server):
    created = salesforce_client.restful("composite/sobjects", method="POST", json={"allOrNone": False, "records": [
        {"attributes": {"type": "Lead"}, "LastName": "O'Brien \\ Sons", "Company": "Tab\tCo", "Email": "ob@x.org"}]})
    lead_id = created[0]["id"]
    found = salesforce_client.query(format_soql("SELECT Id, LastName FROM Lead WHERE LastName = {} AND Company = {}",
                                                "O'Brien \\ Sons", "Tab\tCo"))
    assert _ids(found) == [lead_id] and found["records"][0]["LastName"] == "O'Brien \\ Sons"
    assert salesforce_client.query(f"SELECT Id FROM Lead WHERE Id = '{lead_id[:15]}'")["totalSize"] == 1


def test_unsupported_or_wrong_soql_is_an_error(salesforce_client):
    cases = {
        "SELECT Id FROM Lead WHERE Email = 'a' AND LastName = 'b' OR Title = 'c'": "MALFORMED_QUERY",
        "SELECT Id FROM Lead WHERE": "MALFORMED_QUERY",
        "SELECT Id FROM Lead WHERE CreatedDate = LAST_N_DAYS:3": "MALFORMED_QUERY",
        "SELECT Id, Owner.Name FROM Lead": "INVALID_FIELD",
        "SELECT Id, Nope__c FROM Lead": "INVALID_FIELD",
        "SELECT Id FROM Lead WHERE Nope = 1": "INVALID_FIELD",
        "SELECT Id FROM Leed": "INVALID_TYPE",
        "SELECT Id FROM Lead WHERE SystemModstamp > '2024-01-01T00:00:00Z'": "INVALID_QUERY_FILTER_OPERATOR",
        "SELECT Id FROM Lead WHERE LastName = 'bad \\q escape'": "MALFORMED_QUERY",
        "SELECT Id FROM Lead GROUP BY Id": "MALFORMED_QUERY",
    }
    for soql, code in cases.items():
        with pytest.raises(SalesforceMalformedRequest) as err:
            salesforce_client.query(soql)
        assert err.value.content[0]["errorCode"] == code, soql


def test_query_pages_of_2000_with_next_records_url():
    with start_sandbox(small_seed(leads=4_500)) as sb:
        sf = sb.salesforce_client()
        first = sf.query("SELECT Id FROM Lead ORDER BY SystemModstamp")
        assert first["totalSize"] == 4_500 and not first["done"] and len(first["records"]) == 2_000
        assert first["nextRecordsUrl"].startswith("/services/data/v59.0/query/") and \
            first["nextRecordsUrl"].endswith("-2000")
        ids = [r["Id"] for r in sf.query_all_iter("SELECT Id, SystemModstamp FROM Lead ORDER BY SystemModstamp")]
        assert len(ids) == len(set(ids)) == 4_500
        small = sf.query("SELECT Id FROM Lead", headers={"Sforce-Query-Options": "batchSize=500"})
        assert len(small["records"]) == 500
        long_text = sf.query("SELECT Id, Pain_Point__c, Score_Reasons_Detail__c FROM Lead")
        assert len(long_text["records"]) == 200  # two long text fields: batches of 200, as in Salesforce
        assert sb.stats()["endpoints"]["salesforce.query_more"]["200"] == 2


def test_describe_has_every_mapped_custom_field(salesforce_client):
    mapping = load_mapping("salesforce")
    fields = {f["name"]: f for f in salesforce_client.Lead.describe()["fields"]}
    wanted = {m.field for m in mapping.fields.values() if "." not in m.field} | {e.field for e in mapping.events.values()} | {
        e.count_field for e in mapping.events.values() if e.count_field}
    assert wanted <= set(fields)
    stage = fields["Lead_Stage__c"]
    assert stage["type"] == "picklist" and stage["restrictedPicklist"] and \
        [v["value"] for v in stage["picklistValues"]] == list(mapping.fields["stage"].values.values())
    assert fields["SystemModstamp"]["updateable"] is False and fields["Score_Reasons__c"]["length"] == 255
    task_fields = {f["name"] for f in salesforce_client.Task.describe()["fields"]}
    assert {"WhoId", "Subject", "Status", "Priority", "ActivityDate", mapping.tasks.key_field} <= task_fields


def test_composite_update_writes_and_bumps_systemmodstamp(salesforce_client, sandbox_server):
    org = sandbox_server.state.salesforce
    lead_id = [entry[2] for entry in org.tables["Lead"].by_modified()][0]
    before = salesforce_client.query(f"SELECT SystemModstamp, LastModifiedDate FROM Lead WHERE Id = '{lead_id}'")
    time.sleep(0.002)
    result = salesforce_client.restful("composite/sobjects", method="PATCH", json={"allOrNone": False, "records": [
        {"attributes": {"type": "Lead"}, "id": lead_id, "Fit_Score__c": 72, "Lead_Stage__c": "MQL",
         "Score_Reasons__c": "Demo requested; CIO"}]})
    assert result == [{"id": lead_id, "success": True, "errors": []}]
    after = salesforce_client.query(
        f"SELECT Fit_Score__c, Lead_Stage__c, Score_Reasons__c, SystemModstamp, LastModifiedDate FROM Lead "
        f"WHERE Id = '{lead_id}'")["records"][0]
    assert after["Fit_Score__c"] == 72.0 and after["Lead_Stage__c"] == "MQL"
    assert after["SystemModstamp"] > before["records"][0]["SystemModstamp"]
    assert after["LastModifiedDate"] == after["SystemModstamp"]
    newest = salesforce_client.query("SELECT Id FROM Lead ORDER BY SystemModstamp DESC LIMIT 1")
    assert _ids(newest) == [lead_id]
    salesforce_client.Lead.update(lead_id, {"Next_Step__c": "Call"})
    assert salesforce_client.Lead.get(lead_id)["Next_Step__c"] == "Call"
    assert salesforce_client.api_usage["api-usage"].total == 100_000


def test_composite_update_per_record_errors_and_all_or_none(salesforce_client, sandbox_server):
    org = sandbox_server.state.salesforce
    ids = [entry[1] for entry in org.tables["Lead"].ids_in_order()][:3]
    records = [{"attributes": {"type": "Lead"}, "id": ids[0], "Lead_Stage__c": "Hot"},
               {"attributes": {"type": "Lead"}, "id": ids[1], "Score_Reasons__c": "x" * 300},
               {"attributes": {"type": "Lead"}, "id": ids[2], "Next_Step__c": "ok"},
               {"attributes": {"type": "Lead"}, "id": "00Q5g0000zzzzzzAAA", "Next_Step__c": "ok"},
               {"attributes": {"type": "Lead"}, "id": "bogus", "Next_Step__c": "ok"},
               {"attributes": {"type": "Lead"}, "id": ids[2], "SystemModstamp": "2020-01-01T00:00:00Z"}]
    result = salesforce_client.restful("composite/sobjects", method="PATCH", json={"records": records})
    codes = [r["errors"][0]["statusCode"] if r["errors"] else None for r in result]
    assert codes == ["INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", "STRING_TOO_LONG", None,
                     "INVALID_CROSS_REFERENCE_KEY", "MALFORMED_ID", "INVALID_FIELD_FOR_INSERT_UPDATE"]
    stamp = org.tables["Lead"].modified[ids[2]]
    rolled = salesforce_client.restful("composite/sobjects", method="PATCH", json={"allOrNone": True, "records": [
        {"attributes": {"type": "Lead"}, "id": ids[2], "Next_Step__c": "rolled back"},
        {"attributes": {"type": "Lead"}, "id": ids[0], "Lead_Stage__c": "Hot"}]})
    assert rolled[0]["errors"][0]["statusCode"] == "ALL_OR_NONE_OPERATION_ROLLED_BACK" and not rolled[0]["success"]
    assert org.tables["Lead"].records[ids[2]]["Next_Step__c"] == "ok" and org.tables["Lead"].modified[ids[2]] == stamp
    with pytest.raises(SalesforceMalformedRequest) as err:
        salesforce_client.restful("composite/sobjects", method="PATCH", json={"records": [
            {"attributes": {"type": "Lead"}, "id": ids[0], "Nope__c": 1}]})
    assert err.value.content[0]["errorCode"] == "INVALID_FIELD"
    with pytest.raises(SalesforceMalformedRequest) as err:
        salesforce_client.restful("composite/sobjects", method="PATCH", json={"records": [
            {"attributes": {"type": "Lead"}, "id": ids[0]}] * 201})
    assert err.value.status == 400


def test_composite_create_tasks_and_find_them_by_key(salesforce_client, sandbox_server):
    key_field = load_mapping("salesforce").tasks.key_field
    lead_id = [entry[1] for entry in sandbox_server.state.salesforce.tables["Lead"].ids_in_order()][5]
    result = salesforce_client.restful("composite/sobjects", method="POST", json={"allOrNone": False, "records": [
        {"attributes": {"type": "Task"}, "WhoId": lead_id, "Subject": "Book discovery call", "Priority": "High",
         "ActivityDate": "2026-12-01", key_field: f"{lead_id}:mql:book_call"},
        {"attributes": {"type": "Task"}, "WhoId": "00Q5g0000zzzzzzAAA", "Subject": "x", key_field: "bad"},
        {"attributes": {"type": "Task"}, "WhoId": lead_id, "WhatId": lead_id, "Subject": "y", key_field: "bad2"}]})
    assert result[0]["success"] and result[0]["id"].startswith("00T")
    assert [r["errors"][0]["statusCode"] for r in result[1:]] == ["INVALID_CROSS_REFERENCE_KEY",
                                                                  "FIELD_INTEGRITY_EXCEPTION"]
    found = salesforce_client.query(format_soql(
        "SELECT Id, WhoId, Status, Priority, ActivityDate, IsClosed, " + key_field + " FROM Task WHERE " + key_field +
        " IN {}", [f"{lead_id}:mql:book_call", "other"]))
    assert found["totalSize"] == 1
    task = found["records"][0]
    assert task["Id"] == result[0]["id"] and task["Status"] == "Not Started" and task["IsClosed"] is False
    assert task["ActivityDate"] == "2026-12-01" and task["WhoId"] == lead_id
    salesforce_client.restful("composite/sobjects", method="PATCH", json={"records": [
        {"attributes": {"type": "Task"}, "id": task["Id"], "Status": "Completed"}]})
    closed = salesforce_client.query(f"SELECT IsClosed FROM Task WHERE Id = '{task['Id']}'")["records"][0]
    assert closed["IsClosed"] is True
    single = salesforce_client.Task.create({"WhoId": lead_id, "Subject": "single"})
    assert single["success"]


def test_limits_and_usage_header(salesforce_client, sandbox_server):
    limits = salesforce_client.limits()
    assert limits["DailyApiRequests"]["Max"] == 100_000
    used = salesforce_client.api_usage["api-usage"].used
    salesforce_client.query("SELECT Id FROM Lead LIMIT 1")
    assert salesforce_client.api_usage["api-usage"].used == used + 1


def test_request_limit_exceeded_is_403(sandbox_server, salesforce_client, sandbox_faults):
    sandbox_server.reset_limits()
    sandbox_faults(rate_limits="salesforce_daily=3")
    for _ in range(3):
        salesforce_client.query("SELECT Id FROM Lead LIMIT 1")
    assert salesforce_client.api_usage["api-usage"].used == 3 and salesforce_client.api_usage["api-usage"].total == 3
    with pytest.raises(SalesforceRefusedRequest) as err:
        salesforce_client.query("SELECT Id FROM Lead LIMIT 1")
    assert err.value.status == 403 and err.value.content[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED"


def test_sessions_expire_after_n_calls_and_on_demand(sandbox_server, sandbox_faults):
    sandbox_faults("salesforce.session:expire_after=2")
    with_login = sandbox_server.salesforce_client("oauth_password")
    for _ in range(5):
        with_login.query("SELECT Id FROM Lead LIMIT 1")  # re-logs in on each INVALID_SESSION_ID
    assert sandbox_server.stats()["endpoints"]["salesforce.query"]["401"] >= 2
    sandbox_faults(None)
    token_only = sandbox_server.salesforce_client("session")
    token_only.query("SELECT Id FROM Lead LIMIT 1")
    sandbox_server.expire_salesforce_sessions()
    with pytest.raises(SalesforceExpiredSession):
        token_only.query("SELECT Id FROM Lead LIMIT 1")
    relogged = sandbox_server.salesforce_client("password")
    assert relogged.query("SELECT COUNT() FROM Lead")["totalSize"] >= 60


def test_bulk2_query_job_with_locators():
    with start_sandbox(small_seed(leads=2_500)) as sb:
        sf = sb.salesforce_client()
        pages = list(sf.bulk2.Lead.query("SELECT Id, LastName, SystemModstamp FROM Lead", max_records=1_000,
                                         wait=0.01))
        assert len(pages) == 3
        header, first = pages[0].splitlines()[0], pages[0].splitlines()[1]
        assert header == '"Id","LastName","SystemModstamp"' and first.endswith('.000Z"')
        ids = [line.split(",")[0] for page in pages for line in page.splitlines()[1:]]
        assert len(ids) == 2_500 and ids == sorted(ids)  # Id order
        endpoints = sb.stats()["endpoints"]
        assert endpoints["salesforce.bulk2.query_results"]["200"] == 3 and "salesforce.bulk2.query_create" in endpoints
        with pytest.raises(SalesforceMalformedRequest):
            list(sf.bulk2.Lead.query("SELECT Nope FROM Lead", wait=0.01))


@pytest.mark.parametrize("clause", ["ORDER BY SystemModstamp", "LIMIT 10", "OFFSET 5"])
def test_bulk2_query_job_rejects_order_by_limit_offset(sandbox_server, clause):
    sf = sandbox_server.salesforce_client()
    with pytest.raises(SalesforceMalformedRequest) as err:
        sf.restful("jobs/query", method="POST", json={"operation": "query", "query": f"SELECT Id FROM Lead {clause}",
                                                      "contentType": "CSV"})
    [error] = err.value.content
    assert error["errorCode"] == "INVALIDJOB" and clause.rsplit(" ", 1)[0] in error["message"]
