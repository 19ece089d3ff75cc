"""The crm_industry provider: org_type / care_setting from the lead's own CRM industry value."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
import yaml
from enrichment_support import NPPES_TEST_URL, make_lead

from state.cache import EnrichmentCache
from connectors.enrichment.waterfall import DEFAULT_CONFIG_PATH, Waterfall, build_waterfall
from connectors.enrichment.industry import IndustryConfigError, IndustryProvider, normalize_industry
from state import schema as store
from leadflow.canonical import CareSetting, LeadKind, OrgType, PatientInquiry
from mappings import load_mapping

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)



def default_spec() -> dict:
    config = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text(encoding="utf-8"))
    [spec] = [p for p in config["providers"] if p["type"] == "crm_industry"]
    return spec


def industry_waterfall(**spec) -> Waterfall:
    return Waterfall([IndustryProvider.from_config({**default_spec(), **spec})])


def write_config(tmp_path, providers) -> str:
    path = tmp_path / "enrichment.yaml"
    path.write_text(json.dumps({"providers": providers, "cache": {"enabled": False}}), encoding="utf-8")
    return str(path)


def test_normalization_ignores_case_separators_and_and():
    assert normalize_industry("HOSPITAL_HEALTH_CARE") == normalize_industry("Hospital & Health Care") == \
        normalize_industry(" hospital-and-health care ") == "hospital_health_care"
    assert normalize_industry("Information Technology & Services") == normalize_industry("INFORMATION_TECHNOLOGY_AND_SERVICES")
    assert normalize_industry("") == normalize_industry(None) == normalize_industry(" & ") == ""


@pytest.mark.parametrize(("industry", "org_type"), [
    ("PHARMACEUTICALS", OrgType.pharma), ("BIOTECHNOLOGY", OrgType.pharma), ("Biotechnology", OrgType.pharma),
    ("INSURANCE", OrgType.payer), ("Insurance", OrgType.payer), ("COMPUTER_SOFTWARE", OrgType.digital_health),
    ("Information Technology & Services", OrgType.digital_health), ("Technology", OrgType.digital_health),
    ("HOSPITAL_HEALTH_CARE", OrgType.hospital), ("Hospital & Health Care", OrgType.hospital),
    ("MEDICAL_PRACTICE", OrgType.physician_practice),
])
def test_default_table_maps_hubspot_and_salesforce_values(industry, org_type):
    [outcome] = industry_waterfall().enrich_batch([make_lead(company_name="Acme", industry=industry)], NOW)
    assert outcome.lead.org_type is org_type
    assert outcome.lead.industry == industry  # read-only: never rewritten


def test_provenance_names_the_provider_confidence_and_industry_value():
    [outcome] = industry_waterfall().enrich_batch([make_lead(industry="medical-practice")], NOW)
    assert outcome.lead.org_type is OrgType.physician_practice and outcome.lead.care_setting is CareSetting.ambulatory
    assert outcome.filled == ["care_setting", "org_type"]
    provenance = outcome.provenance["org_type"]
    assert (provenance.provider, provenance.at, provenance.confidence, provenance.source_key) == \
        ("crm_industry", NOW, 0.6, "crm_industry:industry:medical-practice")
    assert outcome.notes == []


def test_fills_only_blank_fields():
    leads = [make_lead("1", industry="PHARMACEUTICALS", org_type="clinic"),
             make_lead("2", industry="MEDICAL_PRACTICE", org_type="clinic"),
             make_lead("3", industry="MEDICAL_PRACTICE", org_type="hospital", care_setting="inpatient")]
    kept, care_only, untouched = industry_waterfall().enrich_batch(leads, NOW)
    assert kept.lead.org_type is OrgType.clinic and kept.provenance == {}
    assert care_only.lead.org_type is OrgType.clinic and care_only.lead.care_setting is CareSetting.ambulatory
    assert care_only.filled == ["care_setting"]
    assert untouched.lead.org_type is OrgType.hospital and untouched.lead.care_setting is CareSetting.inpatient
    assert untouched.provenance == {} and untouched.notes == []


def test_unknown_or_missing_industry_enriches_nothing_and_says_so():
    unknown, missing = industry_waterfall().enrich_batch(
        [make_lead("1", industry="MANAGEMENT_CONSULTING"), make_lead("2")], NOW)
    assert unknown.lead.org_type is None and unknown.provenance == {}
    assert len(unknown.notes) == 1 and "no mapping for industry 'MANAGEMENT_CONSULTING'" in unknown.notes[0]
    assert missing.lead.org_type is None
    assert missing.notes == ["CRM industry: not looked up (needs an industry value in the CRM)"]


def test_patient_leads_are_not_enriched():
    patient = make_lead(lead_kind=LeadKind.patient, industry="INSURANCE", patient=PatientInquiry(payer="Aetna"))
    [outcome] = industry_waterfall().enrich_batch([patient], NOW)
    assert outcome.lead.org_type is None and outcome.notes == ["patient lead: not enriched"]


def test_not_cached(sqlite_url):
    engine = store.make_engine(sqlite_url)
    waterfall = Waterfall([IndustryProvider.from_config(default_spec())], EnrichmentCache(engine))
    for _ in range(2):
        [outcome] = waterfall.enrich_batch([make_lead(industry="INSURANCE")], NOW)
        assert outcome.lead.org_type is OrgType.payer and outcome.provenance["org_type"].fetched_at == NOW
    stats = waterfall.stats()["by_provider"]["crm_industry"]
    assert stats["lookups"] == 2 and stats.get("cache_hits", 0) == 0 and stats.get("cache_misses", 0) == 0
    engine.dispose()


def test_custom_table_and_confidence_from_config(tmp_path):
    path = write_config(tmp_path, [{"type": "crm_industry", "confidence": 0.5,
                                    "org_type": {"Veterinary": "other", "Health Plan": "Payer"}}])
    waterfall = build_waterfall(path)
    assert [p.name for p in waterfall.providers] == ["crm_industry"]
    assert waterfall.providers[0].fillable == frozenset({"org_type"}) and not waterfall.providers[0].cacheable
    [outcome] = waterfall.enrich_batch([make_lead(industry="HEALTH_PLAN")], NOW)
    assert outcome.lead.org_type is OrgType.payer and outcome.provenance["org_type"].confidence == 0.5


@pytest.mark.parametrize(("spec", "key", "problem"), [
    ({"org_type": {"PHARMACEUTICALS": "pharmacy"}}, "providers.crm_industry.org_type.PHARMACEUTICALS",
     "'pharmacy' is not a value of org_type"),
    ({"org_type": {"INSURANCE": "payer"}, "care_setting": {"MEDICAL_PRACTICE": "outpatient"}},
     "providers.crm_industry.care_setting.MEDICAL_PRACTICE", "'outpatient' is not a value of care_setting"),
    ({"org_type": {"INSURANCE": "payer", "Insurance": "other"}}, "providers.crm_industry.org_type.Insurance",
     "same industry as 'INSURANCE'"),
    ({"org_type": {"INSURANCE": None}}, "providers.crm_industry.org_type.INSURANCE", "None is not a value"),
    ({"org_type": ["INSURANCE"]}, "providers.crm_industry.org_type", "expected a mapping"),
    ({"org_types": {"INSURANCE": "payer"}}, "providers.crm_industry.org_types", "unknown key"),
    ({}, "providers.crm_industry", "needs an org_type or care_setting table"),
    ({"org_type": {"INSURANCE": "payer"}, "confidence": 1.5}, "providers.crm_industry.confidence", "(0, 1]"),
])
def test_config_errors_name_the_file_and_the_key(tmp_path, spec, key, problem):
    path = write_config(tmp_path, [{"name": "crm_industry", "type": "crm_industry", **spec}])
    with pytest.raises(IndustryConfigError) as error:
        build_waterfall(path)
    assert (error.value.path, error.value.key) == (path, key)
    assert str(error.value).startswith(f"{path}: {key}: ") and problem in str(error.value)


def test_duplicate_spellings_of_one_value_are_fine():
    provider = IndustryProvider.from_config({"org_type": {"INSURANCE": "payer", "Insurance": "payer"}})
    assert provider.tables == {"org_type": {"insurance": "payer"}}


def test_default_config_runs_nppes_first_and_the_industry_after_it(nppes_api, sqlite_url):
    engine = store.make_engine(sqlite_url)
    waterfall = build_waterfall(engine=engine, nppes_url=NPPES_TEST_URL)
    assert [p.name for p in waterfall.providers] == ["nppes", "crm_industry"]
    provider_lead = make_lead("1", company_name="Peach State Medical Practice", state="PA", industry="HOSPITAL_HEALTH_CARE")
    pharma_lead = make_lead("2", company_name="Curavita Therapeutics", state="GA", industry="PHARMACEUTICALS")
    practice, pharma = waterfall.enrich_batch([provider_lead, pharma_lead], NOW)
    # NPPES is authoritative for providers: the industry's "hospital" does not replace what NPPES found
    assert practice.lead.npi == "1174270805" and practice.lead.org_type is OrgType.physician_practice
    assert practice.provenance["org_type"].provider == "nppes" and practice.provenance["care_setting"].provider == "nppes"
    assert not any("CRM industry" in note for note in practice.notes)
    # not in NPPES: the industry fills what is still blank
    assert pharma.lead.npi is None and pharma.lead.org_type is OrgType.pharma
    assert pharma.provenance["org_type"].provider == "crm_industry"
    assert pharma.provenance["org_type"].source_key == "crm_industry:industry:PHARMACEUTICALS"
    assert any(note.startswith("NPPES") for note in pharma.notes)
    engine.dispose()


def test_both_mappings_read_industry_and_never_write_it():
    hubspot, salesforce = load_mapping("hubspot").fields["industry"], load_mapping("salesforce").fields["industry"]
    assert (hubspot.field, hubspot.object, hubspot.direction) == ("industry", "company", "read")
    assert (salesforce.field, salesforce.direction) == ("Industry", "read")
