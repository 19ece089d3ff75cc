"""convert.py: CRM record -> Lead and back, through the real mappings."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from connectors.crm.base import Quarantined
from connectors.crm.convert import (
    EVENT_COUNT_CAP,
    convert_record,
    current_values,
    parse_datetime,
    record_to_lead,
    to_crm_value,
    values_equal,
)
from leadflow.canonical import OrgType, Source, Stage
from mappings import load_mapping

HS = load_mapping("hubspot")
SF = load_mapping("salesforce")
SF_FIELDS = SF.model_copy(update={"signals": "fields"})  # engagement from the custom date fields


def hs_props(**extra):
    props = {
        "email": "ann@example.org", "firstname": "Ann", "lastname": "Lee", "jobtitle": "CIO",
        "lastmodifieddate": "2026-01-02T03:04:05.678Z", "hs_analytics_source": "REFERRALS",
        "leadflow_lead_score": "42", "discovery_need_confirmed": "true", "zip": "02139",
        "hs_analytics_last_visit_timestamp": "1767225600000", "hs_analytics_num_visits": "17",
        "recent_conversion_date": "2026-01-01T00:00:00Z", "recent_conversion_event_name": "Demo request form",
    }
    props.update(extra)
    return props


def test_hubspot_record_types_and_company():
    company = {"name": "Mercy Health", "leadflow_org_type": "health_system", "leadflow_bed_count": "350.0"}
    lead = record_to_lead(HS, "101", hs_props(), company, "9001")
    assert lead.crm == "hubspot" and lead.crm_id == "101" and lead.crm_company_id == "9001"
    assert lead.lead_score == 42 and lead.bed_count == 350
    assert lead.source is Source.referral
    assert lead.org_type is OrgType.health_system
    assert lead.discovery.need_confirmed is True
    assert lead.patient is not None and lead.patient.zip == "02139"
    assert lead.modified_at == datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc)
    visits = [e for e in lead.events if e.type.value == "site_return_visit"]
    assert len(visits) == EVENT_COUNT_CAP  # 17 visits, capped, all at the latest visit time
    assert {e.at for e in visits} == {datetime(2026, 1, 1, tzinfo=timezone.utc)}
    assert [e.type.value for e in lead.events].count("demo_request") == 1


def test_salesforce_record_json_types_aliases_and_picklists():
    rec = {"Id": "00Q1", "Company": "Acme Clinic", "LeadSource": "Employee Referral", "Org_Type__c": "Physician Practice",
           "Lead_Score__c": 77.0, "Need_Confirmed__c": True, "Manual_Stage__c": "SQL",
           "SystemModstamp": "2026-01-02T03:04:05.000+0000", "Visit_Count__c": 1.0,
           "Last_Visit_At__c": "2026-01-01T10:00:00.000+0000", "Care_Setting__c": "Post-Acute"}
    lead = record_to_lead(SF_FIELDS, "00Q1", rec)
    assert lead.source is Source.referral  # read alias
    assert lead.org_type is OrgType.physician_practice
    assert lead.care_setting.value == "post_acute"
    assert lead.manual_stage is Stage.sql and lead.lead_score == 77
    assert lead.crm_company_id is None  # company fields live on the Lead itself
    assert len(lead.events) == 1


def test_out_of_range_is_quarantined_with_record_and_field():
    result = convert_record(HS, "1234", hs_props(leadflow_lead_score="140"))
    assert isinstance(result, Quarantined)
    assert result.reason == "hubspot:1234: leadflow_lead_score: expected a number in 0-100, got 140"
    assert result.field == "leadflow_lead_score"


def test_not_a_number_and_bad_datetime_are_quarantined():
    bad = convert_record(SF, "00Q9", {"Bed_Count__c": "lots", "SystemModstamp": "2026-01-01T00:00:00Z"})
    assert isinstance(bad, Quarantined) and "Bed_Count__c" in bad.reason and "00Q9" in bad.reason
    bad = convert_record(HS, "7", hs_props(recent_conversion_date="yesterday"))
    assert isinstance(bad, Quarantined) and bad.reason.startswith("hubspot:7: recent_conversion_date:")


def test_unknown_enum_values_degrade_with_warnings():
    lead = record_to_lead(HS, "5", hs_props(hs_analytics_source="CARRIER_PIGEON", leadflow_lead_kind="martian"))
    assert lead.source is Source.other
    assert any("source" in w for w in lead.warnings) and any("lead_kind" in w for w in lead.warnings)


def test_datetime_formats():
    ms = parse_datetime("1704067200000")
    assert ms == datetime(2024, 1, 1, tzinfo=timezone.utc)
    assert parse_datetime("2024-01-01T00:00:00Z") == ms
    assert parse_datetime("2024-01-01T00:00:00.000+0000") == ms
    assert parse_datetime("") is None


def test_write_values_per_crm():
    fm = HS.fields["lead_score"]
    assert to_crm_value("hubspot", "lead_score", fm, 42) == "42"
    assert to_crm_value("salesforce", "lead_score", SF.fields["lead_score"], 42) == 42
    assert to_crm_value("hubspot", "stage", HS.fields["stage"], Stage.mql) == "mql"
    assert to_crm_value("salesforce", "stage", SF.fields["stage"], Stage.intake_ready) == "Intake Ready"
    assert to_crm_value("hubspot", "discovery.need_confirmed", HS.fields["discovery.need_confirmed"], True) == "true"
    when = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)
    assert to_crm_value("salesforce", "scored_at", SF.fields["scored_at"], when) == "2026-01-02T03:04:05.678Z"
    reasons = ["x" * 200, "y" * 200]
    short = to_crm_value("hubspot", "reasons", HS.fields["reasons"], reasons)
    assert short == "x" * 200  # whole reasons only: the second one does not fit
    full = to_crm_value("hubspot", "reasons_detail", HS.fields["reasons_detail"], reasons)
    assert full == "x" * 200 + "\n" + "y" * 200


def test_values_equal_is_type_aware():
    assert values_equal(HS.fields["lead_score"], "42", "42.0")
    assert values_equal(SF.fields["lead_score"], 42.0, 42)
    assert values_equal(HS.fields["next_step"], "", None)
    assert not values_equal(HS.fields["next_step"], "Call", "call")
    assert values_equal(HS.fields["scored_at"], "1767322800000", "2026-01-02T03:00:00.000Z")


def test_current_values_keys_company_fields_on_hubspot():
    cur = current_values(HS, {"leadflow_stage": "mql"}, {"leadflow_org_type": "payer"})
    assert cur["leadflow_stage"] == "mql" and cur["company.leadflow_org_type"] == "payer"
    cur = current_values(SF, {"Lead_Stage__c": "MQL", "Org_Type__c": "Payer"}, None)
    assert cur["Org_Type__c"] == "Payer"


@pytest.mark.parametrize("value", ["it's \\ 'quoted' OR Id != ''", "Robert'); DROP--"])
def test_strings_pass_through_unchanged(value):
    lead = record_to_lead(SF, "00Q2", {"Company": value, "SystemModstamp": "2026-01-01T00:00:00Z"})
    assert lead.company_name == value


def test_reasons_read_back_as_a_list():
    lead = record_to_lead(HS, "9", hs_props(leadflow_reasons="Health system; Demo requested"))
    assert lead.reasons == ["Health system", "Demo requested"]


def test_reasons_field_holds_whole_reasons_within_its_length():
    from connectors.crm.convert import to_crm_value
    from mappings import load_mapping

    fm = load_mapping("hubspot").fields["reasons"]
    reasons = [f"reason number {i} explains something sales should know" for i in range(10)]
    text = to_crm_value("hubspot", "reasons", fm, reasons)
    assert len(text) <= fm.max_length
    assert all(part in reasons for part in text.split("; "))  # never a reason cut in half
    assert text.startswith(reasons[0]) and len(text.split("; ")) < len(reasons)
    assert len(to_crm_value("hubspot", "reasons", fm, ["x" * 400])) == fm.max_length
