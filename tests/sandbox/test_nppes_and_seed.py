"""The NPPES route and the seed data: wire formats, determinism, what the portal/org start with."""

from __future__ import annotations

import json
import re

import httpx

from mappings import load_mapping
from sandbox import build_sandbox, start_sandbox
from sandbox.seed import HOSPITAL_KINDS, TAXONOMY, customer_owned, declared_inputs, generate, npi_check_digit

ANCHOR = 1_795_000_000_000


def test_nppes_route_serves_the_registry(sandbox_server):
    records = sandbox_server.state.nppes_records
    org = records[0]
    name = org["basic"]["organization_name"]
    response = httpx.get(sandbox_server.nppes_url, params={"version": "2.1", "organization_name": name,
                                                            "state": org["addresses"][0]["state"]})
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert org["number"] in [r["number"] for r in body["results"]] and body["result_count"] == len(body["results"])
    empty = httpx.get(sandbox_server.nppes_url, params={"version": "2.1"})
    assert empty.status_code == 200 and empty.json()["Errors"][0]["number"] == "04"
    assert sandbox_server.stats()["endpoints"]["nppes.search"]["200"] >= 2


def test_nppes_records_are_in_the_current_wire_format():
    data = generate(300, seed=3, anchor_ms=ANCHOR)
    codes = {code for code, _, _ in TAXONOMY.values()} | {kind[1] for kind in HOSPITAL_KINDS}
    for record in data.nppes:
        assert record["enumeration_type"] == "NPI-2" and isinstance(record["number"], str)
        assert re.fullmatch(r"1\d{9}", record["number"]) and npi_check_digit(record["number"][:9]) == record["number"][9]
        assert record["created_epoch"].isdigit() and len(record["created_epoch"]) == 13
        assert {a["address_purpose"] for a in record["addresses"]} == {"LOCATION", "MAILING"}
        assert set(record["basic"]) >= {"organization_name", "organizational_subpart", "enumeration_date", "status"}
        assert record["endpoints"] == [] and isinstance(record["practiceLocations"], list)
        assert sum(t["primary"] for t in record["taxonomies"]) == 1
        for taxonomy in record["taxonomies"]:
            assert taxonomy["code"] in codes and set(taxonomy) == {"code", "desc", "license", "primary", "state",
                                                                    "taxonomy_group"}
    assert any(r["other_names"] for r in data.nppes)
    by_state: dict[tuple[str, str], int] = {}
    for record in data.nppes:
        key = (record["addresses"][0]["state"], re.sub(r"\W", "", record["basic"]["organization_name"])[:12])
        by_state[key] = by_state.get(key, 0) + 1
    assert max(by_state.values()) >= 2  # near-identical names in one state
    names = {r["basic"]["organization_name"] for r in data.nppes}
    companies = {c["properties"]["name"].upper().replace("ST. ", "ST ").replace(",", "")
                 for c in data.hubspot["companies"]}
    assert companies - names  # some organizations are absent from NPPES


def test_same_seed_same_data_and_other_seeds_differ():
    a = generate(120, seed=5, anchor_ms=ANCHOR)
    b = generate(120, seed=5, anchor_ms=ANCHOR)
    c = generate(120, seed=6, anchor_ms=ANCHOR)
    dump = lambda d: json.dumps([d.hubspot, d.salesforce, d.nppes], sort_keys=True)  # noqa: E731
    assert dump(a) == dump(b) and dump(a) != dump(c)


def test_generated_leads_cover_the_domain():
    data = generate(400, seed=9, anchor_ms=ANCHOR)
    hs, sf = load_mapping("hubspot"), load_mapping("salesforce")
    contacts = [c["properties"] for c in data.hubspot["contacts"]]
    sources = {p[hs.fields["source"].field] for p in contacts}
    assert set(hs.fields["source"].values.values()) <= sources <= (
        set(hs.fields["source"].values.values()) | set(hs.fields["source"].read_aliases))
    assert {p[hs.fields["lead_kind"].field] for p in contacts} == {"b2b", "patient"}
    assert any(p.get(hs.fields["sales_accepted"].field) == "true" for p in contacts)
    assert any(p.get(hs.fields["manual_stage"].field) for p in contacts)
    assert any(p.get(hs.fields["discovery.need_confirmed"].field) for p in contacts)
    for name, _ in declared_inputs(hs, sf):
        assert any(p.get(hs.fields[name].field) for p in contacts), name
    assert {"budget_status", "timeline", "security_review", "baa_status"} <= {n for n, _ in declared_inputs(hs, sf)}
    assert any(p.get(hs.fields["pain_point"].field) for p in contacts)
    titles = {p.get("jobtitle") for p in contacts}
    assert {"Chief Information Officer", "Practice Administrator", "Student"} & titles
    for event in hs.events.values():
        assert any(isinstance(p.get(event.field), int) for p in contacts), event.field
    leads = data.salesforce["Lead"]
    assert {r[sf.fields["source"].field] for r in leads} >= set(sf.fields["source"].values.values()) - {"Other"}
    assert all(r["Company"] for r in leads) and any(r.get("NPI__c") for r in leads)
    assert len({c["id"] for c in data.hubspot["companies"]}) < len(contacts)


def test_portal_and_org_start_as_an_admin_left_them():
    sandbox = build_sandbox(20, anchor_ms=ANCHOR)
    hs = load_mapping("hubspot")
    props = sandbox.hubspot.properties
    for item in hs.fields.values():
        obj = "contacts" if item.object == "lead" else "companies"
        assert (item.field in props[obj]) == (customer_owned(item) or item.field in ("email", "firstname")), item.field
    assert "leadflow" not in sandbox.hubspot.groups["contacts"]
    assert len(sandbox.hubspot.tables["contacts"]) == len(sandbox.salesforce.tables["Lead"]) == 20


def test_seed_file_loads_raw_records(tmp_path):
    seed = {
        "hubspot": {
            "contacts": [{"id": "501", "properties": {"email": "a@b.org", "lastmodifieddate": "2025-01-02T03:04:05Z",
                                                       "demo_requested_at": "2025-01-01T00:00:00Z"},
                          "companies": ["601"]}],
            "companies": [{"id": "601", "properties": {"name": "Acme Clinic", "hs_lastmodifieddate": "1735700000000"}}],
            "tasks": [{"id": "701", "properties": {"hs_timestamp": "2025-02-01T00:00:00Z", "hs_task_subject": "Call"},
                       "contacts": ["501"]}],
        },
        "salesforce": {"Lead": [{"Id": "00Q5g0000000001EAA", "LastName": "X", "Company": "Acme",
                                 "SystemModstamp": "2025-01-02T03:04:05.000+0000", "Fit_Score__c": 10}],
                       "Task": []},
        "nppes": [],
    }
    path = tmp_path / "seed.json"
    path.write_text(json.dumps(seed))
    with start_sandbox(str(path)) as sb:
        client = sb.hubspot_client()
        contact = client.crm.contacts.basic_api.get_by_id("501", properties=["demo_requested_at"],
                                                          associations=["companies"])
        assert contact.properties["lastmodifieddate"] == "2025-01-02T03:04:05.000Z"
        assert contact.properties["demo_requested_at"] == "2025-01-01T00:00:00.000Z"
        assert contact.associations["companies"].results[0].id == "601"
        lead = sb.salesforce_client().query("SELECT Fit_Score__c, SystemModstamp FROM Lead")["records"][0]
        assert lead == {"attributes": lead["attributes"], "Fit_Score__c": 10.0,
                        "SystemModstamp": "2025-01-02T03:04:05.000+0000"}
        created = client.crm.contacts.basic_api.create({"properties": {"email": "new@b.org"}})
        assert int(created.id) > 501
