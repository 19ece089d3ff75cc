"""Names as reps and web forms type them, against the NPPES stand-in served by the sandbox over
HTTP: abbreviations, punctuation, parentheticals, "The", "Inc", DBA names. Every organization is
found, within the per-organization query budget, and no namesake in another city is taken."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
from enrichment_support import make_lead, nppes_body, quiet_provider

from connectors.enrichment.waterfall import Waterfall
from connectors.enrichment.nppes import DEFAULT_MAX_QUERIES
from leadflow.canonical import CareSetting, OrgKind, OrgType
from sandbox import SandboxHandle, start_sandbox

from datetime import datetime, timezone

NOW = datetime(2026, 11, 27, 12, tzinfo=timezone.utc)
TEMPLATE = nppes_body("npi2_number_lookup_v2024_multi_specialty_dba.json")["results"][0]


def registered(npi: str, legal: str, city: str, state: str, code: str = "282N00000X", dba: str | None = None) -> dict[str, Any]:
    """An NPI-2 record in the current wire format, located in ``city``."""
    record = copy.deepcopy(TEMPLATE)
    record["number"] = npi
    record["basic"]["organization_name"] = legal
    record["other_names"] = [{"code": "3", "organization_name": dba, "type": "Doing Business As"}] if dba else []
    for address in record["addresses"]:
        address.update(city=city.upper(), state=state)
    record["taxonomies"] = [{"code": code, "desc": "", "license": None, "primary": True, "state": None, "taxonomy_group": ""}]
    return record


# (typed company name, lead city, state, the registered record it must find)
TYPED = [
    ("Mercy Med Ctr Redding", "Redding", "CA", registered("1000000001", "MERCY MEDICAL CENTER REDDING", "Redding", "CA")),
    ("Mercy Med Ctr", "Merced", "CA", registered("1000000002", "MERCY MEDICAL CENTER", "Merced", "CA")),
    ("Union Hosp Of Cecil County", "Elkton", "MD", registered("1000000003", "UNION HOSPITAL OF CECIL COUNTY", "Elkton", "MD")),
    ("Hosp San Antonio", "Kerrville", "TX", registered("1000000004", "HOSPITAL SAN ANTONIO INC", "Kerrville", "TX")),
    ("Brooke Army Med Ctr (Ft Sam Houston)", "Fort Sam Houston", "TX",
     registered("1000000005", "BROOKE ARMY MEDICAL CENTER", "Fort Sam Houston", "TX", "2865M2000X")),
    ("St Patrick Hospital", "Missoula", "MT", registered("1000000006", "ST. PATRICK HOSPITAL", "Missoula", "MT")),
    ("Saint Mary's Med Ctr", "Grand Junction", "CO", registered("1000000007", "ST MARYS MEDICAL CENTER", "Grand Junction", "CO")),
    ("St. Lukes Hosp", "Boise", "ID", registered("1000000008", "SAINT LUKE'S HOSPITAL", "Boise", "ID")),
    ("Children's Hospital of Philadelphia", "Philadelphia", "PA",
     registered("1000000009", "THE CHILDREN'S HOSPITAL OF PHILADELPHIA", "Philadelphia", "PA", "282NC2000X")),
    ("The Johns Hopkins Hospital", "Baltimore", "MD", registered("1000000010", "JOHNS HOPKINS HOSPITAL", "Baltimore", "MD")),
    ("Riverside Family Clinic, Inc.", "Macon", "GA", registered("1000000011", "RIVERSIDE FAMILY CLINIC, LLC", "Macon", "GA", "261QP2300X")),
    ("Northside Care Inc dba Northside Pediatrics", "Athens", "GA",
     registered("1000000012", "NORTHSIDE CARE INC", "Athens", "GA", "208000000X", dba="NORTHSIDE PEDIATRICS")),
    ("Lakeview Pediatrics", "Savannah", "GA",
     registered("1000000013", "SAVANNAH CHILD HEALTH LLC", "Savannah", "GA", "208000000X", dba="LAKEVIEW PEDIATRICS")),
    ("C.S.P. Anesthesia", "Atlanta", "GA", registered("1000000014", "CSP ANESTHESIA LLC", "Atlanta", "GA", "207L00000X")),
    ("Smith & Jones Cardiology", "Dallas", "TX",
     registered("1000000015", "SMITH AND JONES CARDIOLOGY PA", "Dallas", "TX", "207RC0000X")),
    ("Mt. Sinai Hosp", "Chicago", "IL", registered("1000000016", "MOUNT SINAI HOSPITAL", "Chicago", "IL")),
    ("Good Samaritan Hosp, Kearney", "Kearney", "NE", registered("1000000017", "GOOD SAMARITAN HOSPITAL", "Kearney", "NE")),
]
# namesakes of the organizations above in other cities of the same state (none may be taken for
# them), and MERCY MEDICAL CENTER in Redding next to MERCY MEDICAL CENTER REDDING
NAMESAKES = [
    registered("2000000001", "MERCY MEDICAL CENTER", "Redding", "CA"),
    registered("2000000002", "ST PATRICK HOSPITAL", "Helena", "MT"),
    registered("2000000003", "RIVERSIDE FAMILY CLINIC", "Savannah", "GA", "261QP2300X"),
    registered("2000000004", "GOOD SAMARITAN HOSPITAL", "Omaha", "NE"),
    registered("2000000005", "JOHNS HOPKINS HOSPITAL", "Columbia", "MD"),
    registered("2000000006", "LAKESIDE HEALTHCARE", "Tampa", "FL"),
]


@pytest.fixture(scope="module")
def nppes_sandbox() -> Iterator[SandboxHandle]:
    with start_sandbox(None) as handle:
        handle.state.set_nppes_records([record for *_, record in TYPED] + NAMESAKES)
        yield handle


def nppes_requests(handle: SandboxHandle) -> int:
    return sum(handle.stats()["endpoints"].get("nppes.search", {}).values())


def enrich(handle: SandboxHandle, leads: list) -> list:
    return Waterfall([quiet_provider(url=handle.nppes_url)]).enrich_batch(leads, NOW)


def test_every_typed_variant_finds_its_organization_within_the_query_budget(nppes_sandbox):
    leads = [make_lead(str(i), company_name=typed, city=city, state=state) for i, (typed, city, state, _) in enumerate(TYPED)]
    before = nppes_requests(nppes_sandbox)
    outcomes = enrich(nppes_sandbox, leads)
    requests = nppes_requests(nppes_sandbox) - before
    found = {lead.company_name: outcome.lead.npi for lead, outcome in zip(leads, outcomes)}
    assert found == {typed: record["number"] for typed, _, _, record in TYPED}
    assert requests <= DEFAULT_MAX_QUERIES * len(TYPED)
    assert requests < 2 * len(TYPED)  # most are found by their first search


def test_a_namesake_in_another_city_is_not_taken(nppes_sandbox):
    leads = [make_lead("1", company_name="Riverside Family Clinic", city="Augusta", state="GA"),
             make_lead("2", company_name="Good Samaritan Hospital", city="Lincoln", state="NE")]
    outcomes = enrich(nppes_sandbox, leads)
    assert [o.lead.npi for o in outcomes] == [None, None]
    assert "a namesake elsewhere in GA is not taken" in outcomes[0].notes[0]


def test_a_shorter_name_does_not_match_a_longer_namesake(nppes_sandbox):
    """LAKESIDE HEALTH is not LAKESIDE HEALTHCARE (similar characters, another word)."""
    [outcome] = enrich(nppes_sandbox, [make_lead("1", company_name="Lakeside Health", city="Tampa", state="FL")])
    assert outcome.lead.npi is None and "weak match" in outcome.notes[0]


def test_the_city_in_a_typed_name_tells_two_registered_names_in_one_city_apart(nppes_sandbox):
    """MERCY MEDICAL CENTER REDDING and MERCY MEDICAL CENTER, both practising in Redding."""
    with_city, plain = enrich(nppes_sandbox, [make_lead("1", company_name="Mercy Med Ctr Redding", city="Redding", state="CA"),
                                              make_lead("2", company_name="Mercy Med Ctr", city="Redding", state="CA")])
    assert (with_city.lead.npi, plain.lead.npi) == ("1000000001", "2000000001")


HOSPITAL_KINDS = [
    ("282N00000X", "GENERAL HOSPITAL OF TESTVILLE", OrgKind.general_acute, CareSetting.inpatient),
    ("282NC0060X", "TESTVILLE CRITICAL ACCESS HOSPITAL", OrgKind.critical_access, CareSetting.inpatient),
    ("282NC2000X", "TESTVILLE CHILDRENS HOSPITAL", OrgKind.childrens, CareSetting.inpatient),
    ("282NR1301X", "TESTVILLE RURAL HOSPITAL", OrgKind.rural_acute, CareSetting.inpatient),
    ("283Q00000X", "TESTVILLE BEHAVIORAL HOSPITAL", OrgKind.psychiatric, CareSetting.inpatient),
    ("282E00000X", "TESTVILLE SPECIALTY HOSPITAL", OrgKind.long_term_care, CareSetting.post_acute),
    ("283X00000X", "TESTVILLE REHABILITATION HOSPITAL", OrgKind.rehabilitation, CareSetting.post_acute),
    ("2865M2000X", "TESTVILLE ARMY MEDICAL CENTER", OrgKind.federal_dod, CareSetting.inpatient),
    ("282N00000X", "TESTVILLE VA MEDICAL CENTER", OrgKind.federal_va, CareSetting.inpatient),
    ("261QV0200X", "TESTVILLE VA CLINIC", OrgKind.federal_va, CareSetting.ambulatory),
]


def test_each_hospital_kind_gets_its_kind_and_care_setting(nppes_sandbox):
    records = [registered(f"30000000{i:02d}", legal, "Testville", "OK", code) for i, (code, legal, _, _) in enumerate(HOSPITAL_KINDS)]
    nppes_sandbox.state.set_nppes_records(records)
    try:
        leads = [make_lead(str(i), company_name=legal.title(), city="Testville", state="OK") for i, (_, legal, _, _) in enumerate(HOSPITAL_KINDS)]
        outcomes = enrich(nppes_sandbox, leads)
    finally:
        nppes_sandbox.state.set_nppes_records([record for *_, record in TYPED] + NAMESAKES)
    got = [(o.lead.org_kind, o.lead.care_setting) for o in outcomes]
    assert got == [(kind, setting) for _, _, kind, setting in HOSPITAL_KINDS]
    assert all(o.lead.org_type is (OrgType.clinic if "CLINIC" in legal else OrgType.hospital)
               for o, (_, legal, _, _) in zip(outcomes, HOSPITAL_KINDS))


def test_the_seeded_sandbox_with_typed_names_is_found_without_a_wrong_match():
    """The seed's organizations as the CRMs hold their names (typed variants) against the seed's
    NPPES records in the sandbox: none wrong, none missed except where the registry holds two
    same-named organizations in that city; every found hospital has its seeded kind."""
    from connectors.enrichment.nppes import normalize_name, parse_record
    from sandbox.seed import Generator

    generator = Generator(800, seed=3)  # a seed with namesakes in other cities of the state
    data = generator.generate()
    orgs = [o for segment in ("health_system", "hospital", "physician_practice", "clinic", "post_acute")
            for o in generator.orgs.get(segment, [])]
    same_named: dict[tuple[str, str, str], set[str]] = {}
    for raw in data.nppes:
        record = parse_record(raw)
        for name in (record.name, *record.other_names):
            for address in record.locations:
                same_named.setdefault((normalize_name(name), address.city, address.state), set()).add(record.npi)
    assert sum(o.crm_name != o.name for o in orgs) >= len(orgs) // 4
    with start_sandbox(None) as handle:
        handle.state.set_nppes_records(data.nppes)
        leads = [make_lead(str(o.key), company_name=o.crm_name, city=o.city, state=o.state) for o in orgs]
        outcomes = enrich(handle, leads)
    wrong, missed = [], []
    for org, outcome in zip(orgs, outcomes):
        acceptable = ({org.npi} if org.npi else set()) | same_named.get((normalize_name(org.name), org.city.upper(), org.state), set())
        got = outcome.lead.npi
        if got is not None and got not in acceptable:
            wrong.append(org.crm_name)
        elif got is None and len(acceptable) == 1:
            missed.append(org.crm_name)
        if got is not None and got == org.npi and org.hospital_kind:
            assert outcome.lead.org_kind == org.hospital_kind, org.crm_name
    assert (wrong, missed) == ([], [])
