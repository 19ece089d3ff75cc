"""Reading recorded NPPES bodies (both wire formats), taxonomy classification, name matching."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from enrichment_support import TAXONOMY_SAMPLE_CSV, all_fixture_records, nppes_body, quiet_provider

from connectors.enrichment.nppes import (
    NppesError,
    NppesOrg,
    clean,
    name_similarity,
    normalize_name,
    parse_epoch,
    parse_record,
    pick_match,
    query_names,
    records_of,
)
from connectors.enrichment.taxonomy import Taxonomy, category_for, classify, load_nucc_descriptions
from leadflow.canonical import CareSetting, OrgType


def org_from(name: str, index: int = 0) -> NppesOrg:
    return parse_record(nppes_body(name)["results"][index])


def atlanta_org(org_name: str) -> NppesOrg:
    records = nppes_body("npi2_search_city_atlanta_10_v2019.json")["results"]
    return parse_record(next(r for r in records if r["basic"]["organization_name"] == org_name))


def test_every_recorded_record_parses_and_round_trips_through_the_cache_payload():
    records = all_fixture_records()
    assert len(records) > 220
    for raw in records:
        org = parse_record(raw)
        assert org.npi.isdigit() and len(org.npi) == 10
        assert NppesOrg.from_payload(org.to_payload()) == org


def test_the_cache_payload_is_what_dataclasses_asdict_gives():
    """``to_payload`` is built field by field for speed; it must stay the dataclass's own dict."""
    from dataclasses import asdict

    for raw in all_fixture_records():
        org = parse_record(raw)
        expected = asdict(org) | {"last_updated": org.last_updated.isoformat() if org.last_updated else None}
        assert org.to_payload() == expected
        assert list(org.to_payload()) == list(expected)


def test_2019_format_int_number_and_second_epochs():
    org = org_from("npi2_number_lookup_v2019.json")
    assert org.npi == "1568946812" and org.is_organization
    assert org.last_updated == datetime.fromtimestamp(1537639861, tz=timezone.utc)


def test_current_format_string_number_and_millisecond_epochs():
    org = org_from("npi2_number_lookup_v2024_single_specialty_group.json")
    assert org.npi == "1225701881"
    assert org.last_updated == datetime.fromtimestamp(1707768606, tz=timezone.utc)
    assert parse_epoch("1707768606000") == parse_epoch(1707768606)


@pytest.mark.parametrize("raw", [None, "", "--", "NA", " na "])
def test_placeholders_read_as_blank(raw):
    assert clean(raw) == ""


def test_placeholder_name_parts_are_dropped_from_the_official():
    org = org_from("npi2_number_lookup_v2024_multi_specialty_dba.json")
    assert org.official == {"name": "Dr. FAHIMEH SASAN", "title": "Founding OBGYN", "credential": "DO"}
    person = parse_record(nppes_body("npi1_number_lookup_v2022.json")["results"][0])
    assert "--" not in person.name


def test_null_license_and_dba_other_names():
    org = org_from("npi2_number_lookup_v2024_multi_specialty_dba.json")
    assert org.other_names == ("KINDBODY OF PA MEDICAL PRACTICE, PC",)
    assert org.state == "PA" and org.mailing_state == "IL"


def test_primary_taxonomy_not_listed_first_is_found():
    org = atlanta_org("NORTHEAST ATLANTA VASCULAR CARE, LLC")
    result = classify(list(org.taxonomies))
    assert result.code == "2086S0129X"
    assert result.category == "multi_specialty_group"
    assert result.org_type is OrgType.physician_practice and result.care_setting is CareSetting.ambulatory


def test_same_code_listed_twice_collapses_to_the_primary_entry():
    records = nppes_body("mixed_search_city_atlanta_10_v2019.json")["results"]
    twice = next(r for r in records if r["number"] == 1568726677)
    org = parse_record(twice)
    assert [(t.code, t.primary) for t in org.taxonomies] == [("207P00000X", True)]


def test_location_count_deduplicates_location_and_practice_locations():
    assert org_from("npi2_number_lookup_v2019.json").location_count == 2  # Villa Rica + Roswell Rd
    assert org_from("npi2_number_lookup_v2024_single_specialty_group.json").location_count == 1
    raw = nppes_body("npi2_number_lookup_v2019.json")["results"][0]
    same_as_location = {**raw["addresses"][0], "address_1": "403 Permian Way, Ste. D", "postal_code": "30180"}
    doubled = {**raw, "practiceLocations": [same_as_location, *raw["practiceLocations"]]}
    assert parse_record(doubled).location_count == 2


def test_full_state_names_in_addresses_are_read_as_codes():
    records = nppes_body("mixed_search_city_atlanta_10_v2019.json")["results"]
    sprang = parse_record(next(r for r in records if r["number"] == 1053975268))
    assert sprang.state == "GA"


@pytest.mark.parametrize(
    ("code", "group", "category", "org_type", "care_setting"),
    [
        ("282N00000X", "", "general_acute_care_hospital", OrgType.hospital, CareSetting.inpatient),
        ("282NC0060X", "", "critical_access_hospital", OrgType.hospital, CareSetting.inpatient),
        ("283X00000X", "", "rehabilitation_hospital", OrgType.hospital, CareSetting.post_acute),
        ("261QU0200X", "", "urgent_care", OrgType.clinic, CareSetting.ambulatory),
        ("261QD0000X", "", "ambulatory_clinic", OrgType.clinic, CareSetting.ambulatory),
        ("251E00000X", "", "home_health", OrgType.other, CareSetting.home),
        ("314000000X", "", "nursing_facility", OrgType.other, CareSetting.post_acute),
        ("291U00000X", "", "laboratory", OrgType.other, CareSetting.other),
        ("3336C0003X", "", "pharmacy", OrgType.other, CareSetting.ambulatory),
        ("302R00000X", "", "managed_care", OrgType.payer, CareSetting.other),
        ("207L00000X", "193400000X SINGLE SPECIALTY  GROUP", "single_specialty_group", OrgType.physician_practice, CareSetting.ambulatory),
        ("207VE0102X", "193200000X - Multi-Specialty Group", "multi_specialty_group", OrgType.physician_practice, CareSetting.ambulatory),
        ("193200000X", "", "multi_specialty_group", OrgType.physician_practice, CareSetting.ambulatory),
    ],
)
def test_code_table(code, group, category, org_type, care_setting):
    result = classify([Taxonomy(code, "desc", True, group)])
    assert (result.category, result.org_type, result.care_setting) == (category, org_type, care_setting)


def test_every_non_individual_nucc_code_has_a_category(nucc_taxonomy_csv):
    import csv

    with open(nucc_taxonomy_csv, newline="", encoding="utf-8") as handle:
        codes = [row["Code"] for row in csv.DictReader(handle)]
    assert len(codes) > 800
    assert all(category_for(code) is not None for code in codes)


def test_every_active_nucc_hospital_code_has_a_kind_and_the_kind_matches_its_name(nucc_taxonomy_csv):
    """The NUCC code set (read from the shared path, never committed): each active code of the
    Hospitals grouping maps to a kind; the kind agrees with NUCC's own display name."""
    import csv

    from leadflow.canonical import OrgKind

    words = {OrgKind.critical_access: "Critical Access", OrgKind.childrens: "Children", OrgKind.psychiatric: "Psychiatric",
             OrgKind.rehabilitation: "Rehabilitation", OrgKind.long_term_care: ("Long Term", "Chronic"),
             OrgKind.federal_dod: "Military", OrgKind.rural_acute: "Rural"}
    with open(nucc_taxonomy_csv, newline="", encoding="utf-8") as handle:
        hospitals = [row for row in csv.DictReader(handle)
                     if row["Grouping"] == "Hospitals" and not row["Display Name"].startswith("Deactivated")]
    assert len(hospitals) >= 15
    for row in hospitals:
        kind = classify([Taxonomy(row["Code"], "", True, "")]).org_kind
        assert kind is not None, row["Code"]
        expected = words.get(kind)
        if expected:
            assert any(w in row["Display Name"] for w in ((expected,) if isinstance(expected, str) else expected)), row


def test_nucc_descriptions_give_one_specialty_spelling_across_formats():
    descriptions = load_nucc_descriptions(str(TAXONOMY_SAMPLE_CSV))
    old = atlanta_org("NORTHEAST ATLANTA VASCULAR CARE, LLC")  # 2019 desc "Surgery Vascular Surgery"
    assert classify(list(old.taxonomies), descriptions).specialty == "Surgery, Vascular Surgery"
    new = org_from("npi2_number_lookup_v2024_multi_specialty_dba.json")
    assert classify(list(new.taxonomies), descriptions).specialty == "Obstetrics & Gynecology, Reproductive Endocrinology"


def test_the_full_nucc_file_gives_the_same_spellings(nucc_taxonomy_csv):
    full = load_nucc_descriptions(str(nucc_taxonomy_csv))
    assert load_nucc_descriptions(str(TAXONOMY_SAMPLE_CSV)).items() <= full.items()


def test_findings_from_an_organization():
    provider = quiet_provider()
    org = org_from("npi2_number_lookup_v2024_multi_specialty_dba.json")
    findings = provider.findings(org.to_payload())
    assert findings.fields["org_type"] is OrgType.physician_practice
    assert findings.fields["specialty"] == "Obstetrics & Gynecology, Reproductive Endocrinology"
    assert findings.fields["state"] == "PA" and findings.fields["npi"] == "1174270805"
    assert findings.facts["nppes_category"] == "multi_specialty_group"
    assert findings.contact_hint["title"] == "Founding OBGYN"
    assert findings.source_key == "npi:1174270805"


def test_home_health_agency_findings():
    org = atlanta_org("SUNCREST HOME HEALTH OF GEORGIA, INC")
    fields = quiet_provider().findings(org.to_payload()).fields
    assert fields["care_setting"] is CareSetting.home and fields["org_type"] is OrgType.other


def test_errors_envelope_raises_with_the_api_description():
    with pytest.raises(NppesError, match="04 generic: No valid search criteria provided"):
        records_of(nppes_body("error_04_no_valid_criteria.json"))
    with pytest.raises(NppesError, match="09"):
        records_of(nppes_body("error_09_enumeration_type_needs_more.json"))
    assert records_of(nppes_body("empty_result.json")) == []


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("The Emory Clinic, Inc.", "emory clinic"),
        ("MICHAEL D. RANDELL, M.D., P.C.", "michael d randell"),
        ("Smith & Jones Med. Ctr LLC", "smith and jones medical center"),
        ("IVO HORAK OD PC", "ivo horak"),
    ],
)
def test_normalize_name(raw, normalized):
    assert normalize_name(raw) == normalized


def test_name_similarity_ignores_case_punctuation_and_suffixes():
    assert name_similarity("Peach State Medical Practice", "PEACH STATE MEDICAL PRACTICE, PC") == 1.0
    assert name_similarity("Smith and Jones Clinic", "SMITH & JONES CLINIC") == 1.0
    assert name_similarity("Northside Clinic", "Southside Dental") < 0.7


@pytest.mark.parametrize(
    ("raw", "first_query"),
    [
        ("Peach State Medical Practice, PC", "PEACH STATE MEDICAL PRACTICE*"),
        ("Michael D. Randell MD PC", "MICHAEL D*"),
        ("Athletic Spine Rehabilitation LLC", "ATHLETIC SPINE REHABILITATION*"),
        ("A & B Clinic", "A & B CLINIC*"),
        ("C.S.P. Anesthesia", "CSP ANESTHESIA*"),
        ("The Emory Clinic, Inc.", "EMORY CLINIC*"),
    ],
)
def test_query_names(raw, first_query):
    queries = query_names(raw)
    assert queries[0] == first_query and f"THE {first_query}" in queries


def test_pick_match_by_dba_name():
    records = nppes_body("npi2_search_city_atlanta_10_v2019.json")["results"]
    decision = pick_match(records, "Fyzical Therapy & Balance Centers", "GA")
    assert decision.org is not None and decision.org.npi == "1740355304" and decision.confidence == 1.0


def test_pick_match_ignores_candidates_whose_only_tie_to_the_state_is_a_mailing_address():
    records = nppes_body("npi2_search_city_atlanta_10_v2019.json")["results"]
    in_ga = pick_match(records, "Suncrest Home Health of Georgia", "GA")
    assert in_ga.org is not None and in_ga.org.npi == "1447417639"
    in_ky = pick_match(records, "Suncrest Home Health of Georgia", "KY")  # its mailing address is Louisville
    assert in_ky.org is None and in_ky.note == "NPPES: no organization found for 'Suncrest Home Health of Georgia' in KY"


def test_pick_match_counts_practice_locations_as_presence():
    records = nppes_body("npi2_search_city_atlanta_10_v2019.json")["results"]
    # LOCATION Upper Marlboro MD, plus a practice location in Atlanta
    for state in ("MD", "GA"):
        decision = pick_match(records, "Dentistry for Children of Maryland", state)
        assert decision.org is not None and decision.org.npi == "1932668134"
    assert pick_match(records, "Dentistry for Children of Maryland", "GA", city="Upper Marlboro").org is None


def test_pick_match_weak_match_enriches_nothing_and_says_why():
    records = nppes_body("npi2_search_city_atlanta_10_v2019.json")["results"]
    decision = pick_match(records, "Suncrest Hospice of Alabama", "GA")
    assert decision.org is None and decision.note.startswith("NPPES: weak match for 'Suncrest Hospice of Alabama' in GA")


def test_pick_match_two_candidates_within_the_margin_are_ambiguous():
    records = nppes_body("npi2_search_city_atlanta_10_v2019.json")["results"]
    base = next(r for r in records if r["number"] == 1417229741)
    twin = {**base, "number": 1999999999, "basic": {**base["basic"], "organization_name": "NORTHEAST ATLANTA VASCULAR CARE, PC"}}
    decision = pick_match([base, twin], "Northeast Atlanta Vascular Care", "GA")
    assert decision.org is None
    assert decision.note == "NPPES: ambiguous match for 'Northeast Atlanta Vascular Care' in GA: 2 candidates within 0.03"


def test_pick_match_near_twins_outside_the_margin_are_not_ambiguous():
    records = nppes_body("npi2_search_city_atlanta_10_v2019.json")["results"]
    base = next(r for r in records if r["number"] == 1417229741)
    other = {**base, "number": 1999999999, "basic": {**base["basic"], "organization_name": "NORTHEAST ATLANTA VEIN CARE"}}
    decision = pick_match([base, other], "Northeast Atlanta Vascular Care", "GA")
    assert decision.org is not None and decision.org.npi == "1417229741"


def test_pick_match_skips_individuals():
    records = nppes_body("mixed_search_city_atlanta_10_v2019.json")["results"]
    decision = pick_match(records, "Sandy Springs Health Center", "GA")
    assert decision.org is not None and decision.org.npi == "1639225402"
    assert pick_match(records, "Sprang", "GA").org is None


def test_the_leads_city_tells_same_named_organizations_apart():
    from connectors.enrichment.nppes import pick_match, pick_match_near

    def org(npi: str, city: str) -> dict:
        return {"number": npi, "enumeration_type": "NPI-2",
                "basic": {"organization_name": "NORTHSIDE FAMILY CLINIC PC"},
                "addresses": [{"address_purpose": "LOCATION", "city": city, "state": "GA",
                               "postal_code": "30301", "address_1": "1 Main St"}],
                "taxonomies": [{"code": "261QP2300X", "primary": True}]}

    records = [org("1111111111", "ATLANTA"), org("2222222222", "MACON")]
    assert pick_match(records, "Northside Family Clinic", "GA").org is None  # ambiguous state-wide
    assert pick_match_near(records, "Northside Family Clinic", "GA", "Macon").org.npi == "2222222222"
    assert pick_match_near(records, "Northside Family Clinic", "GA", "Savannah").org is None  # no local one: still ambiguous
