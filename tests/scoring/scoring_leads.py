"""Lead builders shared by the scoring tests (imported as ``scoring_leads``)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from leadflow.canonical import Lead

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=timezone.utc)  # a Wednesday


def days_ago(days: float) -> str:
    return (NOW - timedelta(days=days)).isoformat()


def clinic_manager(**overrides: Any) -> Lead:
    """A clinic operations manager at a multi-location practice who downloaded a scheduling-workflow
    guide and requested a demo."""
    data: dict[str, Any] = {
        "crm": "hubspot",
        "crm_id": "c-1",
        "email": "dana@northshoreortho.com",
        "job_title": "Clinic Operations Manager",
        "company_name": "North Shore Orthopedics",
        "company_domain": "northshoreortho.com",
        "org_type": "physician_practice",
        "specialty": "Orthopedic Surgery",
        "care_setting": "ambulatory",
        "provider_count": 22,
        "location_count": 5,
        "state": "MA",
        "country": "US",
        "ehr_vendor": "athenahealth",
        "source": "demo_request",
        "pain_point": "Scheduling no-shows and front-desk staff overtime",
        "timeline": "quarter",
        "events": [
            {"type": "content_download", "at": days_ago(3)},
            {"type": "demo_request", "at": days_ago(1)},
        ],
    }
    data.update(overrides)
    return Lead.model_validate(data)


def health_system_cio(**overrides: Any) -> Lead:
    data: dict[str, Any] = {
        "crm": "salesforce",
        "crm_id": "hs-1",
        "email": "pat@mercyhealth.org",
        "job_title": "Chief Information Officer",
        "company_name": "Mercy Health",
        "company_domain": "mercyhealth.org",
        "org_type": "health_system",
        "care_setting": "inpatient",
        "bed_count": 420,
        "state": "OH",
        "country": "United States",
        "ehr_vendor": "Epic",
        "source": "referral",
        "pain_point": "care coordination after discharge and readmissions",
        "budget_status": "planned",
        "timeline": "half_year",
        "events": [
            {"type": "solution_page_view", "at": days_ago(2)},
            {"type": "pricing_page_view", "at": days_ago(2)},
            {"type": "webinar_attended", "at": days_ago(10)},
        ],
    }
    data.update(overrides)
    return Lead.model_validate(data)


def patient_inquiry(**patient: Any) -> Lead:
    inquiry = {"service_requested": "annual physical", "payer": "Aetna", "zip": "02139", "scheduling_ready": True}
    inquiry.update(patient)
    return Lead.model_validate(
        {
            "crm": "hubspot",
            "crm_id": "p-1",
            "lead_kind": "patient",
            "source": "web_form",
            "pain_point": "recurring migraines since March",
            "patient": inquiry,
            "events": [{"type": "form_fill", "at": days_ago(0.1)}],
        }
    )


