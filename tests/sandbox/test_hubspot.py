"""HubSpot CRM v3/v4 in the sandbox, through the real hubspot-api-client."""

from __future__ import annotations

import json
import time

import pytest
from hubspot.crm.associations.v4 import BatchInputPublicFetchAssociationsBatchRequest
from hubspot.crm.companies import ApiException as CompanyApiException
from hubspot.crm.contacts import (
    ApiException,
    BatchInputSimplePublicObjectBatchInput,
    BatchReadInputSimplePublicObjectId,
    PublicObjectSearchRequest,
)
from hubspot.crm.objects.tasks import (
    AssociationSpec,
    BatchInputSimplePublicObjectBatchInputForCreate,
    PublicAssociationsForObject,
    PublicObjectId,
    SimplePublicObjectInputForCreate,
)
from hubspot.crm.objects.tasks import PublicObjectSearchRequest as TaskSearch
from hubspot.crm.properties import PropertyCreate, PropertyGroupCreate

from mappings import load_mapping
from sandbox import start_sandbox
from sandbox_support import small_seed


def _search(client, filters, sort="lastmodifieddate", limit=200, after=None, properties=None):
    request = PublicObjectSearchRequest(
        filter_groups=[{"filters": filters}] if filters else [],
        sorts=[{"propertyName": sort, "direction": "ASCENDING"}] if sort else [],
        limit=limit, after=after, properties=properties or ["email"])
    return client.crm.contacts.search_api.do_search(public_object_search_request=request)


def test_list_pages_with_after_and_returns_associations(hubspot_client, sandbox_server):
    seen, after = [], None
    while True:
        page = hubspot_client.crm.contacts.basic_api.get_page(
            limit=25, after=after, properties=["email", "lead_source"], associations=["companies"])
        seen += [c.id for c in page.results]
        if page.paging is None:
            break
        after = page.paging.next.after
    assert len(seen) == len(set(seen)) == len(sandbox_server.state.hubspot.tables["contacts"])
    with_company = [c for c in hubspot_client.crm.contacts.basic_api.get_page(limit=50, associations=["companies"]).results
                    if c.associations]
    types = {r.type for c in with_company for r in c.associations["companies"].results}
    assert types == {"contact_to_company", "contact_to_company_unlabeled"}


def test_list_rejects_limit_over_100(hubspot_client):
    with pytest.raises(ApiException) as err:
        hubspot_client.crm.contacts.basic_api.get_page(limit=101)
    assert err.value.status == 400
    assert json.loads(err.value.body)["category"] == "VALIDATION_ERROR"


def test_search_by_modified_date_pages_in_order(hubspot_client, sandbox_server):
    portal = sandbox_server.state.hubspot
    stamps = sorted(portal.tables["contacts"].modified.values())
    since = stamps[10]
    ids, after, previous = [], None, None
    while True:
        page = _search(hubspot_client, [{"propertyName": "lastmodifieddate", "operator": "GTE", "value": str(since)}],
                       limit=7, after=after)
        assert page.total == len([s for s in stamps if s >= since])
        for item in page.results:
            stamp = item.updated_at.timestamp() * 1000
            assert previous is None or stamp >= previous
            previous = stamp
            assert set(item.properties) >= {"email", "hs_object_id", "lastmodifieddate", "createdate"}
        ids += [item.id for item in page.results]
        if not page.paging:
            break
        after = page.paging.next.after
    assert len(ids) == len(set(ids)) == page.total


def test_search_filters_combine_and_validate(hubspot_client, sandbox_server):
    portal = sandbox_server.state.hubspot
    ordered = [entry[2] for entry in portal.tables["contacts"].by_modified()]
    low, high = portal.tables["contacts"].modified[ordered[5]], portal.tables["contacts"].modified[ordered[15]]
    page = _search(hubspot_client, [
        {"propertyName": "lastmodifieddate", "operator": "GT", "value": str(low)},
        {"propertyName": "lastmodifieddate", "operator": "LTE", "value": str(high)}])
    assert [r.id for r in page.results] == ordered[6:16]
    by_id = _search(hubspot_client, [{"propertyName": "hs_object_id", "operator": "GT", "value": "10050"}],
                    sort="hs_object_id")
    assert [r.id for r in by_id.results] == [str(i) for i in range(10051, 10061)]
    email = portal.tables["contacts"].records["10003"]["email"]
    by_email = _search(hubspot_client, [{"propertyName": "email", "operator": "EQ", "value": email.upper()}], sort=None)
    assert [r.id for r in by_email.results] == ["10003"]
    in_upper = _search(hubspot_client, [{"propertyName": "email", "operator": "IN", "values": [email.upper()]}], sort=None)
    assert in_upper.total == 0  # IN on string properties needs lowercase values, as in HubSpot
    first = portal.tables["contacts"].records["10003"]["firstname"]
    text = hubspot_client.crm.contacts.search_api.do_search(public_object_search_request=PublicObjectSearchRequest(
        query=first.lower(), limit=100, properties=["firstname"]))
    assert "10003" in [r.id for r in text.results] and {r.properties["firstname"] for r in text.results} == {first}
    with pytest.raises(ApiException) as err:
        _search(hubspot_client, [{"propertyName": "no_such_prop", "operator": "EQ", "value": "x"}])
    assert err.value.status == 400 and json.loads(err.value.body)["category"] == "VALIDATION_ERROR"
    with pytest.raises(ApiException) as err:
        _search(hubspot_client, [], limit=201)
    assert err.value.status == 400


def test_search_cap_at_10000_results():
    with start_sandbox(small_seed(contacts=10_050)) as sb:
        client = sb.hubspot_client()
        page = _search(client, [{"propertyName": "lastmodifieddate", "operator": "GTE", "value": "0"}], after="9800")
        assert page.total == 10_050 and len(page.results) == 200
        assert page.paging.next.after == "10000"
        with pytest.raises(ApiException) as err:
            _search(client, [{"propertyName": "lastmodifieddate", "operator": "GTE", "value": "0"}], after="10000")
        assert err.value.status == 400
        assert json.loads(err.value.body)["category"] == "VALIDATION_ERROR"


def test_batch_read_returns_207_for_missing_ids(hubspot_client):
    body = BatchReadInputSimplePublicObjectId(inputs=[{"id": "10001"}, {"id": "999"}], properties=["email"],
                                              properties_with_history=[])
    result = hubspot_client.crm.contacts.batch_api.read(batch_read_input_simple_public_object_id=body)
    assert [r.id for r in result.results] == ["10001"]
    assert result.num_errors == 1 and result.errors[0].category == "OBJECT_NOT_FOUND"
    assert result.errors[0].context == {"ids": ["999"]}


def test_batch_update_writes_and_bumps_modified(hubspot_client, sandbox_server):
    before = _search(hubspot_client, [{"propertyName": "hs_object_id", "operator": "EQ", "value": "10002"}], sort=None)
    old = before.results[0].properties["lastmodifieddate"]
    time.sleep(0.002)
    inputs = [{"id": "10002", "properties": {"pain_point": "Fax-based referrals", "budget_status": "approved"}},
              {"id": "10004", "properties": {"pain_point": ""}}]
    result = hubspot_client.crm.contacts.batch_api.update(
        batch_input_simple_public_object_batch_input=BatchInputSimplePublicObjectBatchInput(inputs=inputs))
    assert result.status == "COMPLETE" and {r.id for r in result.results} == {"10002", "10004"}
    read = hubspot_client.crm.contacts.basic_api.get_by_id("10002", properties=["pain_point", "budget_status"])
    assert read.properties["pain_point"] == "Fax-based referrals" and read.properties["budget_status"] == "approved"
    assert read.properties["lastmodifieddate"] > old
    assert read.updated_at.timestamp() * 1000 > before.results[0].updated_at.timestamp() * 1000
    assert hubspot_client.crm.contacts.basic_api.get_by_id("10004", properties=["pain_point"]).properties["pain_point"] is None
    newest = _search(hubspot_client, [{"propertyName": "lastmodifieddate", "operator": "GTE", "value": "0"}],
                     limit=200).results[-2:]
    assert {r.id for r in newest} == {"10002", "10004"}


def test_batch_update_validation_errors(hubspot_client):
    def update(inputs):
        return hubspot_client.crm.contacts.batch_api.update(
            batch_input_simple_public_object_batch_input=BatchInputSimplePublicObjectBatchInput(inputs=inputs))

    with pytest.raises(ApiException) as err:
        update([{"id": "10001", "properties": {"leadflow_fit_score": "40"}}])
    body = json.loads(err.value.body)
    assert err.value.status == 400 and body["category"] == "VALIDATION_ERROR"
    assert body["errors"][0]["code"] == "PROPERTY_DOESNT_EXIST" and "leadflow_fit_score" in body["message"]
    with pytest.raises(ApiException) as err:
        update([{"id": "10001", "properties": {"budget_status": "maybe"}}])
    assert json.loads(err.value.body)["errors"][0]["code"] == "INVALID_OPTION"
    with pytest.raises(ApiException) as err:
        update([{"id": "10001", "properties": {}}, {"id": "10001", "properties": {}}])
    assert "Duplicate IDs" in json.loads(err.value.body)["message"]
    with pytest.raises(ApiException) as err:
        update([{"id": str(10_001 + i), "properties": {}} for i in range(101)])
    assert err.value.status == 400
    partial = update([{"id": "10001", "properties": {"pain_point": "x"}}, {"id": "424242", "properties": {}}])
    assert partial.num_errors == 1 and partial.errors[0].context == {"ids": ["424242"]}


def test_properties_groups_and_setup(hubspot_client, sandbox_server):
    mapping = load_mapping("hubspot")
    names = {p.name for p in hubspot_client.crm.properties.core_api.get_all("contacts").results}
    reads = {m.field for m in mapping.fields.values() if m.object == "lead" and m.direction == "read"}
    outputs = {m.field for m in mapping.fields.values() if m.object == "lead" and m.direction != "read"}
    events = {e.field for e in mapping.events.values()} | {e.count_field for e in mapping.events.values() if e.count_field}
    assert reads | events <= names
    assert not outputs & names
    company_names = {p.name for p in hubspot_client.crm.properties.core_api.get_all("companies").results}
    assert {"npi", "ehr_vendor", "name", "domain"} <= company_names and "leadflow_org_type" not in company_names

    hubspot_client.crm.properties.groups_api.create("contacts", PropertyGroupCreate(name="leadflow", label="leadflow"))
    created = hubspot_client.crm.properties.core_api.create("contacts", PropertyCreate(
        name="leadflow_stage", label="Stage", type="enumeration", field_type="select", group_name="leadflow",
        options=[{"label": "MQL", "value": "mql", "hidden": False}, {"label": "SQL", "value": "sql", "hidden": False}]))
    assert created.name == "leadflow_stage" and [o.value for o in created.options] == ["mql", "sql"]
    assert hubspot_client.crm.properties.core_api.get_by_name("contacts", "leadflow_stage").group_name == "leadflow"
    with pytest.raises(Exception) as err:
        hubspot_client.crm.properties.core_api.create("contacts", PropertyCreate(
            name="leadflow_stage", label="Stage", type="string", field_type="text", group_name="leadflow"))
    assert err.value.status == 409
    hubspot_client.crm.contacts.basic_api.update("10001", {"properties": {"leadflow_stage": "mql"}})
    assert hubspot_client.crm.contacts.basic_api.get_by_id("10001", properties=["leadflow_stage"]).properties[
        "leadflow_stage"] == "mql"


def _task(contact_id, key, subject="Book discovery call"):
    return SimplePublicObjectInputForCreate(
        properties={"hs_timestamp": "2026-12-01T00:00:00Z", "hs_task_subject": subject, "hs_task_status": "NOT_STARTED",
                    "hs_task_priority": "HIGH", "hs_task_type": "CALL", "hs_task_body": key},
        associations=[PublicAssociationsForObject(to=PublicObjectId(id=contact_id), types=[
            AssociationSpec(association_category="HUBSPOT_DEFINED", association_type_id=204)])])


def test_tasks_create_search_and_associations(hubspot_client, sandbox_server):
    tasks_api = hubspot_client.crm.objects.tasks
    single = tasks_api.basic_api.create(simple_public_object_input_for_create=_task("10005", "k-single"))
    assert single.id and single.properties["hs_task_subject"] == "Book discovery call"
    batch = tasks_api.batch_api.create(batch_input_simple_public_object_batch_input_for_create=
                                       BatchInputSimplePublicObjectBatchInputForCreate(
                                           inputs=[_task("10006", "k-a"), _task("10007", "k-b")]))
    assert len(batch.results) == 2
    found = tasks_api.search_api.do_search(public_object_search_request=TaskSearch(
        filter_groups=[{"filters": [{"propertyName": "hs_task_body", "operator": "IN", "values": ["k-a", "k-b"]}]}],
        properties=["hs_task_body", "hs_task_status"], limit=100))
    assert sorted(r.properties["hs_task_body"] for r in found.results) == ["k-a", "k-b"]
    by_contact = tasks_api.search_api.do_search(public_object_search_request=TaskSearch(
        filter_groups=[{"filters": [{"propertyName": "associations.contact", "operator": "EQ", "value": "10005"}]}]))
    assert single.id in [r.id for r in by_contact.results]
    rows = hubspot_client.crm.associations.v4.basic_api.get_page("tasks", single.id, "contacts").results
    assert [(str(r.to_object_id), r.association_types[0].type_id) for r in rows] == [("10005", 204)]
    with pytest.raises(Exception) as err:
        tasks_api.basic_api.create(simple_public_object_input_for_create=SimplePublicObjectInputForCreate(
            properties={"hs_task_subject": "no due date"}))
    assert err.value.status == 400
    with pytest.raises(Exception) as err:
        tasks_api.basic_api.create(simple_public_object_input_for_create=_task("123", "bad-contact"))
    assert err.value.status == 400


def test_associations_v4_batch_read(hubspot_client, sandbox_server):
    portal = sandbox_server.state.hubspot
    with_company = next(cid for cid in portal.tables["contacts"].records if portal.associated("contacts", cid, "companies"))
    result = hubspot_client.crm.associations.v4.batch_api.get_page(
        "contacts", "companies", batch_input_public_fetch_associations_batch_request=
        BatchInputPublicFetchAssociationsBatchRequest(inputs=[{"id": with_company}, {"id": "999"}]))
    assert result.results[0]._from.id == with_company
    company = list(portal.associated("contacts", with_company, "companies"))[0]
    assert str(result.results[0].to[0].to_object_id) == company
    assert {t.type_id for t in result.results[0].to[0].association_types} == {1, 279}
    assert result.errors[0].context == {"fromObjectId": ["999"]}
    single = hubspot_client.crm.associations.v4.basic_api.get_page("contacts", with_company, "companies")
    assert str(single.results[0].to_object_id) == company


def test_auth_and_rate_limit_headers(sandbox_server, hubspot_client):
    from hubspot import HubSpot

    bad = HubSpot(access_token="wrong", host=sandbox_server.url)
    with pytest.raises(Exception) as err:
        bad.crm.contacts.basic_api.get_page(limit=1)
    assert err.value.status == 401
    assert json.loads(err.value.body)["category"] == "INVALID_AUTHENTICATION"
    with pytest.raises(CompanyApiException) as err:
        HubSpot(host=sandbox_server.url).crm.companies.basic_api.get_page(limit=1)
    assert err.value.status == 401

    import httpx

    headers = {"Authorization": f"Bearer {sandbox_server.hubspot_token}"}
    listed = httpx.get(f"{sandbox_server.url}/crm/v3/objects/contacts?limit=1", headers=headers)
    for name in ("X-HubSpot-RateLimit-Max", "X-HubSpot-RateLimit-Remaining", "X-HubSpot-RateLimit-Interval-Milliseconds",
                 "X-HubSpot-RateLimit-Daily", "X-HubSpot-RateLimit-Daily-Remaining"):
        assert name in listed.headers
    assert listed.headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "10000"
    searched = httpx.post(f"{sandbox_server.url}/crm/v3/objects/contacts/search", headers=headers, json={"limit": 1})
    assert searched.status_code == 200
    assert not [h for h in searched.headers if h.lower().startswith("x-hubspot-ratelimit")]


def test_create_conflicts_and_batch_create_trace_errors(hubspot_client, sandbox_server, sandbox_faults):
    email = sandbox_server.state.hubspot.tables["contacts"].records["10020"]["email"]
    with pytest.raises(ApiException) as err:
        hubspot_client.crm.contacts.basic_api.create({"properties": {"email": email.upper()}})
    assert err.value.status == 409 and "Existing ID: 10020" in json.loads(err.value.body)["message"]
    sandbox_faults("hubspot.tasks.batch_create:record_error=VALIDATION_ERROR,ids=t2")
    inputs = [dict(_task("10021", f"trace-{n}").to_dict(), objectWriteTraceId=n) for n in ("t1", "t2")]
    for item in inputs:
        item["associations"] = [{"to": {"id": "10021"}, "types": [{"associationCategory": "HUBSPOT_DEFINED",
                                                                  "associationTypeId": 204}]}]
    result = hubspot_client.crm.objects.tasks.batch_api.create(
        batch_input_simple_public_object_batch_input_for_create={"inputs": inputs})
    assert [r.properties["hs_task_body"] for r in result.results] == ["trace-t1"]
    assert result.errors[0].context == {"objectWriteTraceId": ["t2"]}


def test_list_next_link_is_an_absolute_url_that_a_client_can_follow(hubspot_client, sandbox_server):
    """HubSpot's ``paging.next.link`` is the absolute URL of the same list with ``after=`` set
    (``https://api.hubapi.com/crm/v3/objects/contacts?after=102``); following it with a plain HTTP
    client walks the whole list, same limit and properties, no record twice."""
    import httpx

    first = hubspot_client.crm.contacts.basic_api.get_page(limit=25, properties=["email"])
    link = first.paging.next.link
    assert link.startswith(f"{sandbox_server.url}/crm/v3/objects/contacts?")
    assert f"after={first.paging.next.after}" in link and "limit=25" in link
    seen = [c.id for c in first.results]
    headers = {"Authorization": f"Bearer {sandbox_server.hubspot_token}"}
    with httpx.Client(headers=headers) as client:
        while link:
            body = client.get(link).raise_for_status().json()
            assert len(body["results"]) <= 25 and all(set(r["properties"]) >= {"email"} for r in body["results"])
            seen += [r["id"] for r in body["results"]]
            link = (body.get("paging") or {}).get("next", {}).get("link")
    assert len(seen) == len(set(seen)) == len(sandbox_server.state.hubspot.tables["contacts"])


def test_search_filter_group_limits_are_hubspots(hubspot_client, sandbox_server):
    """At most 5 filter groups, 6 filters a group, 18 in all (HubSpot's search guide; its Aug 2024
    changelog announced 5/10/25, the stricter figures are kept): over any of them is a 400."""
    def search(groups):
        request = PublicObjectSearchRequest(filter_groups=[{"filters": g} for g in groups], limit=1)
        return hubspot_client.crm.contacts.search_api.do_search(public_object_search_request=request)

    def f(n):
        return {"propertyName": "hs_object_id", "operator": "GT", "value": str(n)}

    assert search([[f(1), f(2), f(3)]] * 5).total > 0  # 5 groups, 15 filters
    assert search([[f(i) for i in range(6)]] * 3).total > 0  # 6 a group, 18 in all
    for groups in ([[f(1)]] * 6, [[f(i) for i in range(7)]], [[f(i) for i in range(6)]] * 3 + [[f(1)]]):
        with pytest.raises(ApiException) as caught:
            search(groups)
        assert caught.value.status == 400 and json.loads(caught.value.body)["category"] == "VALIDATION_ERROR"
