"""Every injected fault kind and the rate limits, through the real clients."""

from __future__ import annotations

import json
import time

import httpx
import pytest
import requests
import urllib3
from hubspot.crm.contacts import ApiException, BatchInputSimplePublicObjectBatchInput
from simple_salesforce.exceptions import SalesforceGeneralError

from sandbox.faults import SpecError, parse_fault_spec, parse_rate_limits


def _update(client, inputs, **kwargs):
    return client.crm.contacts.batch_api.update(
        batch_input_simple_public_object_batch_input=BatchInputSimplePublicObjectBatchInput(inputs=inputs), **kwargs)


def _list(client):
    return client.crm.contacts.basic_api.get_page(limit=1)


def _outcomes(client, n):
    out = []
    for _ in range(n):
        try:
            _list(client)
            out.append(200)
        except ApiException as exc:
            out.append(exc.status)
    return out


def test_fraction_faults_are_deterministic(hubspot_client, sandbox_faults):
    sandbox_faults("hubspot.contacts.list:status=500,rate=0.3", seed=11)
    first = _outcomes(hubspot_client, 40)
    sandbox_faults("hubspot.contacts.list:status=500,rate=0.3", seed=11)
    assert _outcomes(hubspot_client, 40) == first
    assert 3 <= first.count(500) <= 25
    sandbox_faults("hubspot.contacts.list:status=500,rate=0.3", seed=12)
    assert _outcomes(hubspot_client, 40) != first


def test_count_skip_and_glob(hubspot_client, sandbox_faults):
    sandbox_faults("hubspot.*:status=503,skip=1,count=2")
    assert _outcomes(hubspot_client, 5) == [200, 503, 503, 200, 200]


def test_injected_hubspot_429_has_body_and_headers(hubspot_client, sandbox_faults):
    sandbox_faults("hubspot.contacts.batch_update:status=429")
    with pytest.raises(ApiException) as err:
        _update(hubspot_client, [{"id": "10001", "properties": {"pain_point": "x"}}])
    body = json.loads(err.value.body)
    assert err.value.status == 429 and body["policyName"] == "TEN_SECONDLY_ROLLING" and body["errorType"] == "RATE_LIMIT"
    assert err.value.headers["X-HubSpot-RateLimit-Remaining"] == "0"
    assert err.value.headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "10000"


def test_ten_secondly_and_daily_limits(hubspot_client, sandbox_server, sandbox_faults):
    sandbox_server.reset_limits()
    sandbox_faults(rate_limits="hubspot=3/10s")
    assert _outcomes(hubspot_client, 3) == [200, 200, 200]
    with pytest.raises(ApiException) as err:
        _list(hubspot_client)
    assert err.value.status == 429 and json.loads(err.value.body)["policyName"] == "TEN_SECONDLY_ROLLING"
    assert err.value.headers["X-HubSpot-RateLimit-Max"] == "3" and err.value.headers["X-HubSpot-RateLimit-Remaining"] == "0"
    search = hubspot_client.crm.contacts.search_api.do_search(public_object_search_request={"limit": 1})
    assert search.total >= 1  # search has its own bucket
    sandbox_server.reset_limits()
    sandbox_faults(rate_limits="hubspot_daily=2")
    assert _outcomes(hubspot_client, 3) == [200, 200, 429]
    with pytest.raises(ApiException) as err:
        _list(hubspot_client)
    assert json.loads(err.value.body)["policyName"] == "DAILY"
    assert err.value.headers["X-HubSpot-RateLimit-Daily-Remaining"] == "0"
    sandbox_server.reset_limits()
    sandbox_faults(rate_limits="hubspot_search=2/1s")
    statuses = []
    for _ in range(3):
        try:
            hubspot_client.crm.contacts.search_api.do_search(public_object_search_request={"limit": 1})
            statuses.append(200)
        except ApiException as exc:
            statuses.append(exc.status)
    assert statuses == [200, 200, 429]


def test_global_rate_limit_visible_in_request_log(hubspot_client, sandbox_server, sandbox_faults):
    sandbox_server.reset_limits()
    sandbox_server.reset_stats()
    sandbox_faults(rate_limits="hubspot=5/1s")
    _outcomes(hubspot_client, 12)
    log = sandbox_server.requests(endpoint="hubspot.contacts.list")
    ok = [row["at"] for row in log if row["status"] == 200]
    assert len(log) == 12 and {row["status"] for row in log} == {200, 429}
    for i, stamp in enumerate(ok):
        assert sum(1 for other in ok[: i + 1] if stamp - other < 1.0) <= 5
    assert {"at", "at_iso", "method", "endpoint", "status"} <= set(log[0])


def test_salesforce_injected_statuses(salesforce_client, sandbox_faults):
    sandbox_faults("salesforce.query:status=503,count=1")
    with pytest.raises(SalesforceGeneralError) as err:
        salesforce_client.query("SELECT Id FROM Lead LIMIT 1")
    assert err.value.status == 503 and err.value.content[0]["errorCode"] == "SERVER_UNAVAILABLE"
    salesforce_client.query("SELECT Id FROM Lead LIMIT 1")


def test_status_fault_by_record_id(hubspot_client, sandbox_faults):
    sandbox_faults("hubspot.contacts.batch_update:status=500,ids=10009")
    _update(hubspot_client, [{"id": "10008", "properties": {"pain_point": "ok"}}])
    with pytest.raises(ApiException) as err:
        _update(hubspot_client, [{"id": "10008", "properties": {}}, {"id": "10009", "properties": {}}])
    assert err.value.status == 500 and json.loads(err.value.body)["category"] == "INTERNAL_ERROR"


def test_slow_responses(sandbox_server, sandbox_faults):
    sandbox_faults("nppes.search:delay=0.3")
    started = time.perf_counter()
    response = httpx.get(f"{sandbox_server.nppes_url}?version=2.1&state=GA")
    assert response.status_code == 200 and time.perf_counter() - started >= 0.3


def test_timeout_holds_the_request_and_still_applies_it(hubspot_client, sandbox_server, sandbox_faults):
    sandbox_faults("hubspot.contacts.batch_update:timeout=0.8")
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        _update(hubspot_client, [{"id": "10010", "properties": {"pain_point": "late write"}}], _request_timeout=0.2)
    deadline = time.monotonic() + 5
    while sandbox_server.state.hubspot.tables["contacts"].records["10010"].get("pain_point") != "late write":
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_dropped_connections(hubspot_client, salesforce_client, sandbox_server, sandbox_faults):
    lead_id = next(iter(sandbox_server.state.salesforce.tables["Lead"].records))
    sandbox_faults("salesforce.composite.update:drop")
    with pytest.raises(requests.exceptions.ConnectionError):
        salesforce_client.restful("composite/sobjects", method="PATCH", json={"records": [
            {"attributes": {"type": "Lead"}, "id": lead_id, "Next_Step__c": "never"}]})
    assert sandbox_server.state.salesforce.tables["Lead"].records[lead_id].get("Next_Step__c") != "never"
    sandbox_faults("hubspot.contacts.batch_update:drop=after")
    with pytest.raises((urllib3.exceptions.ProtocolError, urllib3.exceptions.MaxRetryError)):
        _update(hubspot_client, [{"id": "10011", "properties": {"pain_point": "applied, unanswered"}}])
    assert sandbox_server.state.hubspot.tables["contacts"].records["10011"]["pain_point"] == "applied, unanswered"
    assert sandbox_server.stats()["endpoints"]["hubspot.contacts.batch_update"]["0"] >= 1


def test_hubspot_207_record_errors(hubspot_client, sandbox_faults):
    sandbox_faults("hubspot.contacts.batch_update:record_error=CONFLICT,ids=10012|10013,message=locked by another sync")
    result = _update(hubspot_client, [{"id": str(i), "properties": {"pain_point": "p"}} for i in (10012, 10013, 10014)])
    assert [r.id for r in result.results] == ["10014"]
    assert result.num_errors == 1 and result.errors[0].category == "CONFLICT"
    assert sorted(result.errors[0].context["ids"]) == ["10012", "10013"]
    assert result.errors[0].message == "locked by another sync"


def test_salesforce_unable_to_lock_row(salesforce_client, sandbox_server, sandbox_faults):
    ids = [entry[1] for entry in sandbox_server.state.salesforce.tables["Lead"].ids_in_order()][20:23]
    sandbox_faults(f"salesforce.composite.update:record_error=UNABLE_TO_LOCK_ROW,ids={ids[0]}|{ids[2]}")
    result = salesforce_client.restful("composite/sobjects", method="PATCH", json={"records": [
        {"attributes": {"type": "Lead"}, "id": i, "Next_Step__c": "retry me"} for i in ids]})
    assert [r["success"] for r in result] == [False, True, False]
    assert result[0]["errors"][0]["statusCode"] == "UNABLE_TO_LOCK_ROW" and ids[0] in result[0]["errors"][0]["message"]
    assert sandbox_server.state.salesforce.tables["Lead"].records[ids[0]].get("Next_Step__c") != "retry me"


def test_fault_json_form_and_spec_errors(sandbox_server, sandbox_faults):
    answer = sandbox_server.set_faults([{"target": "nppes.search", "status": 503, "count": 1}])
    assert answer["faults"][0]["target"] == "nppes.search"
    assert httpx.get(f"{sandbox_server.nppes_url}?version=2.1&state=GA").status_code == 503
    assert httpx.get(f"{sandbox_server.nppes_url}?version=2.1&state=GA").status_code == 200
    bad = httpx.post(f"{sandbox_server.url}/_sandbox/faults", content=b"hubspot.*:status=abc")
    assert bad.status_code == 400 and "not a number" in bad.json()["error"]
    for spec in ("nothing", "x:status=500,delay=1", "x:rate=2,status=500", "x:status=500,bogus=1"):
        with pytest.raises(SpecError):
            parse_fault_spec(spec)
    with pytest.raises(SpecError):
        parse_rate_limits("hubspot=many")
    assert parse_rate_limits("hubspot=190/10s,hubspot_daily=625000,salesforce_daily=15000").hubspot_max == 190
