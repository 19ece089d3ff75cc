"""Unique values and upserts in the sandbox, through the real clients: HubSpot properties with
``hasUniqueValue`` and the tasks batch upsert; Salesforce External ID + Unique fields and the
sObject Collections upsert; a response held past the client's timeout still applies the write."""

from __future__ import annotations

import json

import pytest
import requests
import urllib3
from hubspot.crm.objects.tasks import ApiException as TaskApiException
from simple_salesforce.exceptions import SalesforceMalformedRequest

from mappings import load_mapping

HS_KEY = "lf_unique_key_test"
SF_KEY = load_mapping("salesforce").tasks.key_field


@pytest.fixture(scope="module")
def hs_key(hubspot_client):
    hubspot_client.crm.properties.core_api.create("tasks", {
        "name": HS_KEY, "label": "Unique key (test)", "type": "string", "fieldType": "text", "groupName": "task",
        "hasUniqueValue": True})
    return HS_KEY


def _hs_input(key: str, subject: str, status: str = "NOT_STARTED") -> dict:
    return {"id": key, "idProperty": HS_KEY, "objectWriteTraceId": key,
            "properties": {"hs_timestamp": "2026-12-01T00:00:00Z", "hs_task_subject": subject, "hs_task_status": status}}


def _hs_upsert(client, inputs: list[dict], **kwargs) -> dict:
    response = client.crm.objects.tasks.batch_api.upsert({"inputs": inputs}, _preload_content=False, **kwargs)
    return json.loads(response.data)


def _hs_tasks_with(sandbox, key: str) -> list[str]:
    records = sandbox.state.hubspot.tables["tasks"].records
    return [i for i, r in records.items() if r.get(HS_KEY) == key]


def test_hubspot_upsert_creates_then_updates_by_the_unique_key(hubspot_client, sandbox_server, hs_key):
    first = _hs_upsert(hubspot_client, [_hs_input("k-1", "first"), _hs_input("k-2", "second")])
    assert [(r["properties"][HS_KEY], r["new"]) for r in first["results"]] == [("k-1", True), ("k-2", True)]
    again = _hs_upsert(hubspot_client, [_hs_input("k-1", "renamed")])
    assert again["results"][0]["new"] is False and again["results"][0]["id"] == first["results"][0]["id"]
    assert _hs_tasks_with(sandbox_server, "k-1") == [first["results"][0]["id"]]
    record = sandbox_server.state.hubspot.tables["tasks"].records[first["results"][0]["id"]]
    assert record["hs_task_subject"] == "renamed"


def test_hubspot_rejects_a_duplicate_unique_value_on_create_and_update(hubspot_client, sandbox_server, hs_key):
    created = _hs_upsert(hubspot_client, [_hs_input("k-dup", "original")])["results"][0]
    with pytest.raises(TaskApiException) as err:
        hubspot_client.crm.objects.tasks.basic_api.create({"properties": {
            "hs_timestamp": "2026-12-01T00:00:00Z", HS_KEY: "K-DUP"}})
    body = json.loads(err.value.body)
    assert err.value.status == 400 and body["category"] == "VALIDATION_ERROR"
    assert "already has that value" in body["message"] and f"task {created['id']}" in body["message"]
    other = _hs_upsert(hubspot_client, [_hs_input("k-other", "other")])["results"][0]
    with pytest.raises(TaskApiException) as err:
        hubspot_client.crm.objects.tasks.batch_api.update({"inputs": [{"id": other["id"],
                                                                        "properties": {HS_KEY: "k-dup"}}]})
    assert err.value.status == 400
    with pytest.raises(TaskApiException) as err:
        _hs_upsert(hubspot_client, [_hs_input("k-twice", "a"), _hs_input("k-twice", "b")])
    assert err.value.status == 400 and "Duplicate IDs" in json.loads(err.value.body)["message"]
    assert _hs_tasks_with(sandbox_server, "k-dup") == [created["id"]] and not _hs_tasks_with(sandbox_server, "k-twice")


def test_hubspot_upsert_needs_a_unique_id_property(hubspot_client, hs_key):
    hubspot_client.crm.properties.core_api.create("tasks", {
        "name": "lf_plain_key", "label": "Plain key", "type": "string", "fieldType": "text", "groupName": "task"})
    with pytest.raises(TaskApiException) as err:
        _hs_upsert(hubspot_client, [dict(_hs_input("p-1", "x"), idProperty="lf_plain_key")])
    assert err.value.status == 400 and "non-unique 0-27 property lf_plain_key" in json.loads(err.value.body)["message"]


def test_hubspot_upsert_held_past_the_client_timeout_still_lands_once(hubspot_client, sandbox_server, hs_key,
                                                                      sandbox_faults):
    sandbox_faults("hubspot.tasks.batch_upsert:timeout=1.0,count=1")
    with pytest.raises(urllib3.exceptions.HTTPError):
        _hs_upsert(hubspot_client, [_hs_input("k-held", "held")], _request_timeout=0.3)
    deadline_ids: list[str] = []
    for _ in range(40):
        deadline_ids = _hs_tasks_with(sandbox_server, "k-held")
        if deadline_ids:
            break
        __import__("time").sleep(0.05)
    assert len(deadline_ids) == 1  # the held request was applied after the client gave up
    retry = _hs_upsert(hubspot_client, [_hs_input("k-held", "held")])
    assert retry["results"][0]["new"] is False and _hs_tasks_with(sandbox_server, "k-held") == deadline_ids


def test_hubspot_v4_batch_association_create_is_idempotent(hubspot_client, sandbox_server, hs_key):
    task = _hs_upsert(hubspot_client, [_hs_input("k-link", "link")])["results"][0]
    body = {"inputs": [{"from": {"id": task["id"]}, "to": {"id": "10005"},
                        "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 204}]},
                       {"from": {"id": task["id"]}, "to": {"id": "999"},
                        "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 204}]}]}
    api = hubspot_client.crm.associations.v4.batch_api
    for _ in range(2):
        result = json.loads(api.create("tasks", "contacts", body, _preload_content=False).data)
        assert [r["toObjectId"] for r in result["results"]] == [10005]
        assert result["errors"][0]["category"] == "OBJECT_NOT_FOUND"
    assert sandbox_server.state.hubspot.associated("tasks", task["id"], "contacts") == {"10005": [204]}


def _sf_record(lead_id: str, key: str, subject: str, **extra) -> dict:
    return {"attributes": {"type": "Task"}, "WhoId": lead_id, "Subject": subject, SF_KEY: key, **extra}


def _sf_upsert(client, records: list[dict], **kwargs) -> list[dict]:
    return client.restful(f"composite/sobjects/Task/{SF_KEY}", method="PATCH",
                          json={"allOrNone": False, "records": records}, **kwargs)


def _lead(sandbox, n: int) -> str:
    return [entry[1] for entry in sandbox.state.salesforce.tables["Lead"].ids_in_order()][n]


def _sf_tasks_with(sandbox, key: str) -> list[str]:
    return [i for i, r in sandbox.state.salesforce.tables["Task"].records.items() if r.get(SF_KEY) == key]


def test_salesforce_collection_upsert_creates_then_updates_by_external_id(salesforce_client, sandbox_server):
    lead = _lead(sandbox_server, 1)
    first = _sf_upsert(salesforce_client, [_sf_record(lead, f"{lead}:a", "A"), _sf_record(lead, f"{lead}:b", "B")])
    assert [(r["success"], r["created"]) for r in first] == [(True, True), (True, True)]
    again = _sf_upsert(salesforce_client, [_sf_record(lead, f"{lead}:a", "A renamed")])
    assert again == [{"id": first[0]["id"], "success": True, "errors": [], "created": False}]
    assert _sf_tasks_with(sandbox_server, f"{lead}:a") == [first[0]["id"]]
    assert sandbox_server.state.salesforce.tables["Task"].records[first[0]["id"]]["Subject"] == "A renamed"
    twice = _sf_upsert(salesforce_client, [_sf_record(lead, f"{lead}:c", "C"), _sf_record(lead, f"{lead}:c", "C")])
    assert [r["errors"][0]["statusCode"] for r in twice] == ["DUPLICATE_EXTERNAL_ID"] * 2
    assert not _sf_tasks_with(sandbox_server, f"{lead}:c")


def test_salesforce_rejects_a_duplicate_unique_value_on_create_and_update(salesforce_client, sandbox_server):
    lead = _lead(sandbox_server, 2)
    kept = _sf_upsert(salesforce_client, [_sf_record(lead, f"{lead}:x", "X")])[0]["id"]
    created = salesforce_client.restful("composite/sobjects", method="POST", json={"records": [
        _sf_record(lead, f"{lead}:x", "X again"), _sf_record(lead, f"{lead}:y", "Y")]})
    assert created[0]["errors"][0]["statusCode"] == "DUPLICATE_VALUE" and kept in created[0]["errors"][0]["message"]
    assert created[1]["success"]
    updated = salesforce_client.restful("composite/sobjects", method="PATCH", json={"records": [
        {"attributes": {"type": "Task"}, "id": created[1]["id"], SF_KEY: f"{lead}:x"}]})
    assert updated[0]["errors"][0]["statusCode"] == "DUPLICATE_VALUE"
    with pytest.raises(SalesforceMalformedRequest):
        salesforce_client.Task.create({"WhoId": lead, SF_KEY: f"{lead}:x"})
    case_differs = _sf_upsert(salesforce_client, [_sf_record(lead, f"{lead}:X", "other case")])[0]
    assert case_differs["created"] is True  # the key field is case-sensitive, as setup asks
    assert _sf_tasks_with(sandbox_server, f"{lead}:x") == [kept]


def test_salesforce_upsert_by_a_field_that_is_not_an_external_id_is_refused(salesforce_client, sandbox_server):
    lead = _lead(sandbox_server, 3)
    with pytest.raises(SalesforceMalformedRequest) as err:
        salesforce_client.restful("composite/sobjects/Task/Subject", method="PATCH",
                                  json={"records": [_sf_record(lead, f"{lead}:s", "S")]})
    assert err.value.content[0]["errorCode"] == "INVALID_FIELD"
    described = {f["name"]: f for f in salesforce_client.Task.describe()["fields"]}
    assert described[SF_KEY]["externalId"] and described[SF_KEY]["unique"] and described[SF_KEY]["caseSensitive"]


def test_salesforce_upsert_held_past_the_client_timeout_still_lands_once(salesforce_client, sandbox_server,
                                                                          sandbox_faults):
    lead = _lead(sandbox_server, 4)
    sandbox_faults("salesforce.composite.upsert:timeout=1.0,count=1")
    with pytest.raises(requests.exceptions.Timeout):
        _sf_upsert(salesforce_client, [_sf_record(lead, f"{lead}:held", "held")], timeout=0.3)
    ids: list[str] = []
    for _ in range(40):
        ids = _sf_tasks_with(sandbox_server, f"{lead}:held")
        if ids:
            break
        __import__("time").sleep(0.05)
    assert len(ids) == 1
    retry = _sf_upsert(salesforce_client, [_sf_record(lead, f"{lead}:held", "held")])
    assert retry[0]["created"] is False and _sf_tasks_with(sandbox_server, f"{lead}:held") == ids
