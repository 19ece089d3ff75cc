from datetime import datetime, timezone

import pytest
from pydantic import ValidationError

from leadflow.canonical import (
    CANONICAL_FIELDS,
    DecisionRole,
    Lead,
    OrgType,
    Source,
    Stage,
    Timeline,
)


def full_lead() -> Lead:
    return Lead(
        crm="salesforce",
        crm_id="00Q000000000001",
        email="ops@northside-clinic.example",
        first_name="Dana",
        last_name="O'Neil",
        job_title="Clinic Operations Manager",
        company_name="Northside Family Clinics",
        company_domain="northside-clinic.example",
        npi="1568946812",
        org_type="clinic",
        specialty="Family Medicine",
        care_setting="ambulatory",
        provider_count=42,
        location_count=6,
        state="GA",
        country="US",
        source="demo_request",
        pain_point="Scheduling takes too much front-desk time",
        budget_status="planned",
        timeline="quarter",
        security_review="in_progress",
        baa_status="not_started",
        discovery={"need_confirmed": True},
        events=[{"type": "demo_request", "at": "2026-11-20T15:00:00Z"}],
        sales_accepted=False,
        fit_score=80,
        engagement_score=55,
        lead_score=70,
        stage="mql",
        reasons=["Multi-location clinic in the ideal profile", "Requested a demo 7 days ago"],
        next_step="Sales reviews and accepts within 2 business days",
        model_version="healthcare-2026.11",
        scored_at=datetime(2026, 11, 27, tzinfo=timezone.utc),
    )


def test_json_round_trip_is_lossless():
    lead = full_lead()
    again = Lead.model_validate_json(lead.model_dump_json())
    assert again == lead
    assert again.model_dump(mode="json") == lead.model_dump(mode="json")


def test_json_contract_uses_the_documented_names():
    data = full_lead().model_dump(mode="json")
    for name in ("crm", "crm_id", "lead_kind", "org_type", "care_setting", "budget_status", "timeline",
                 "decision_role", "security_review", "baa_status", "discovery", "events", "sales_accepted",
                 "manual_stage", "patient", "fit_score", "engagement_score", "lead_score", "stage",
                 "reasons", "next_step", "model_version", "scored_at"):
        assert name in data
    assert data["events"] == [{"type": "demo_request", "at": "2026-11-20T15:00:00Z"}]
    assert data["discovery"]["need_confirmed"] is True


def test_unknown_enum_values_degrade_with_a_warning():
    lead = Lead(crm="hubspot", crm_id="7", org_type="Veterinary", source="TikTok", timeline="someday",
                security_review="maybe", stage="won", events=[{"type": "tweet", "at": "2026-01-01T00:00:00Z"}])
    assert lead.org_type is OrgType.other
    assert lead.source is Source.other
    assert lead.timeline is Timeline.unknown
    assert lead.stage is None
    assert lead.events == []
    text = " | ".join(lead.warnings)
    for expected in ("org_type: unknown value 'Veterinary'", "source: unknown value 'TikTok'",
                     "timeline:", "security_review:", "stage: unknown value 'won'", "unknown event type 'tweet'"):
        assert expected in text


def test_enum_spelling_is_tolerant():
    lead = Lead(crm="hubspot", crm_id="7", org_type="Health System", care_setting="post-acute")
    assert lead.org_type is OrgType.health_system
    assert lead.care_setting.value == "post_acute"
    assert lead.warnings == []


def test_decision_role_is_derived_from_the_title_only_when_absent():
    assert Lead(crm="hubspot", crm_id="1", job_title="Chief Information Officer").decision_role is DecisionRole.decision_maker
    assert Lead(crm="hubspot", crm_id="1", job_title="Medical Student").decision_role is DecisionRole.user
    declared = Lead(crm="hubspot", crm_id="1", job_title="CEO", decision_role="influencer")
    assert declared.decision_role is DecisionRole.influencer


def test_hard_errors_still_name_the_field():
    with pytest.raises(ValidationError) as info:
        Lead(crm="hubspot", crm_id="1", lead_score=140)
    assert "lead_score" in str(info.value)
    with pytest.raises(ValidationError) as info:
        Lead(crm="pipedrive", crm_id="1")
    assert "crm" in str(info.value)


def test_naive_event_times_are_read_as_utc():
    lead = Lead(crm="hubspot", crm_id="1", events=[{"type": "form_fill", "at": "2026-03-01T10:00:00"}])
    assert lead.events[0].at.tzinfo is not None


def test_canonical_field_list_includes_nested_fields():
    assert {"discovery.need_confirmed", "patient.zip", "stage", "manual_stage"} <= CANONICAL_FIELDS
    assert "discovery" not in CANONICAL_FIELDS
    assert Stage("intake_ready")
