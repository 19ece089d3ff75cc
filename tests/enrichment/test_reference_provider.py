"""The customer reference-file provider, on a small CSV written by the test."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from pathlib import Path

import pytest
from enrichment_support import make_lead

from connectors.enrichment.waterfall import Waterfall
from connectors.enrichment.reference import ReferenceFileProvider, normalize_domain
from leadflow.canonical import CareSetting, OrgType

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)
CSV = """\
Organization Name,Website,State,Facility Type,Beds,Physicians,Setting
Northside Hospital,https://www.northside.com/locations,GA,Acute Care Hospital,"1,200",850,Acute
Peach Pediatrics LLC,peachpeds.com,Georgia,Physician Group,--,12,Outpatient
Twin Clinic,twin-a.org,TX,Clinic,,4,Outpatient
Twin Clinic,twin-b.org,TX,Clinic,,6,Outpatient
Odd Vet Place,oddvet.com,CA,Veterinary,lots,2,Outpatient
"""
COLUMNS = {"company_name": "Organization Name", "domain": "Website", "state": "State", "org_type": "Facility Type",
           "bed_count": "Beds", "provider_count": "Physicians", "care_setting": "Setting"}
VALUES = {"org_type": {"Acute Care Hospital": "hospital", "Physician Group": "physician_practice"},
          "care_setting": {"Acute": "inpatient", "Outpatient": "ambulatory"}}


@pytest.fixture()
def provider(tmp_path: Path) -> ReferenceFileProvider:
    path = tmp_path / "vendor.csv"
    path.write_text(CSV, encoding="utf-8")
    return ReferenceFileProvider(path=path, columns=COLUMNS, values=VALUES)


def enrich(provider: ReferenceFileProvider, *leads):
    return Waterfall([provider]).enrich_batch(list(leads), NOW)


@pytest.mark.parametrize(
    ("raw", "domain"),
    [("https://www.Example.org/about?x=1", "example.org"), ("example.org:443", "example.org"), ("", "")],
)
def test_normalize_domain(raw, domain):
    assert normalize_domain(raw) == domain


def test_match_by_domain_fills_mapped_fields(provider):
    [outcome] = enrich(provider, make_lead(company_domain="northside.com"))
    lead = outcome.lead
    assert lead.org_type is OrgType.hospital and lead.care_setting is CareSetting.inpatient
    assert lead.bed_count == 1200 and lead.provider_count == 850 and lead.state == "GA"
    assert lead.company_name == "Northside Hospital"
    provenance = outcome.provenance["bed_count"]
    assert (provenance.provider, provenance.confidence, provenance.source_key) == ("reference", 0.95, "reference:row:2")


def test_match_by_name_and_state_with_placeholders_left_blank(provider):
    [outcome] = enrich(provider, make_lead(company_name="Peach Pediatrics", state="GA"))
    assert outcome.lead.org_type is OrgType.physician_practice and outcome.lead.provider_count == 12
    assert outcome.lead.bed_count is None and "bed_count" not in outcome.provenance
    assert outcome.provenance["org_type"].confidence == 0.9


def test_values_already_on_the_lead_are_kept(provider):
    [outcome] = enrich(provider, make_lead(company_domain="northside.com", bed_count=900, org_type="health_system"))
    assert outcome.lead.bed_count == 900 and outcome.lead.org_type is OrgType.health_system
    assert "bed_count" not in outcome.provenance


def test_two_rows_under_one_key_are_ambiguous(provider):
    [outcome] = enrich(provider, make_lead(company_name="Twin Clinic", state="TX"))
    assert outcome.provenance == {}
    assert "Reference file: ambiguous match for 'Twin Clinic' in TX: rows 4, 5" in outcome.notes


def test_unreadable_values_are_skipped_with_a_note(provider):
    [outcome] = enrich(provider, make_lead(company_domain="oddvet.com"))
    assert outcome.lead.org_type is None and outcome.lead.bed_count is None and outcome.lead.provider_count == 2
    assert any("org_type: unreadable value 'Veterinary'" in n and "bed_count: unreadable value 'lots'" in n for n in outcome.notes)


def test_no_key_and_no_match_are_noted(provider):
    outcomes = enrich(provider, make_lead("1", company_name="Nowhere"), make_lead("2", company_domain="nowhere.org"))
    assert outcomes[0].notes == ["Reference file: not looked up (needs a company domain, or company name and state)"]
    assert outcomes[1].notes == ["Reference file: no usable match for domain nowhere.org"]


def test_missing_columns_are_a_config_error(tmp_path: Path):
    path = tmp_path / "vendor.csv"
    path.write_text("Name,State\nX,GA\n", encoding="utf-8")
    with pytest.raises(ValueError, match="columns not found"):
        ReferenceFileProvider(path=path, columns={"company_name": "Name", "bed_count": "Beds"})


def test_unknown_canonical_fields_are_a_config_error(tmp_path: Path):
    path = tmp_path / "vendor.csv"
    path.write_text("Name\nX\n", encoding="utf-8")
    with pytest.raises(ValueError, match="unknown fields"):
        ReferenceFileProvider(path=path, columns={"fit_score": "Name"})


def test_fetch_many_is_local(provider):
    keys = provider.lookup_keys(make_lead(company_domain="peachpeds.com", company_name="Peach Pediatrics", state="GA"))
    assert [k.cache_key for k in keys] == ["domain:peachpeds.com", "name:peach pediatrics|GA"]
    results = asyncio.run(provider.fetch_many(keys))
    assert {r.status for r in results.values()} == {"found"}
