"""The canonical lead: the one shape every part of leadflow speaks.

Connectors turn CRM records into ``Lead`` through ``mappings/``; ``scoring/`` reads a ``Lead``
and returns its outputs; the JSON form (``Lead.model_dump(mode="json")``) is a contract that
other tools rely on. ``docs/canonical-model.md`` lists every field.

Unknown enum values coming from a CRM never crash a run: they map to ``other`` / ``unknown``
(an unknown event type is dropped) and a warning naming the field is appended to ``warnings``; it
quotes the value only on a B2B lead (``leadflow.redaction.unknown_value``).
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer, model_validator

from leadflow.redaction import unknown_value
from leadflow.titles import decision_role_from_title


class Crm(StrEnum):
    hubspot = "hubspot"
    salesforce = "salesforce"


class LeadKind(StrEnum):
    b2b = "b2b"
    patient = "patient"


class OrgType(StrEnum):
    health_system = "health_system"
    hospital = "hospital"
    physician_practice = "physician_practice"
    clinic = "clinic"
    payer = "payer"
    pharma = "pharma"
    digital_health = "digital_health"
    other = "other"


class OrgKind(StrEnum):
    """What kind of hospital (or other organization) it is, where a code says so (NUCC taxonomy,
    CMS Provider of Services subtype); see connectors/enrichment/taxonomy.py."""

    general_acute = "general_acute"
    critical_access = "critical_access"
    rural_acute = "rural_acute"
    rural_emergency = "rural_emergency"
    psychiatric = "psychiatric"
    childrens = "childrens"
    long_term_care = "long_term_care"
    rehabilitation = "rehabilitation"
    federal_va = "federal_va"
    federal_dod = "federal_dod"
    other = "other"


class CareSetting(StrEnum):
    inpatient = "inpatient"
    ambulatory = "ambulatory"
    home = "home"
    post_acute = "post_acute"
    virtual = "virtual"
    other = "other"


class Source(StrEnum):
    web_form = "web_form"
    demo_request = "demo_request"
    phone = "phone"
    paid_search = "paid_search"
    paid_social = "paid_social"
    referral = "referral"
    conference = "conference"
    webinar = "webinar"
    organic = "organic"
    partner = "partner"
    list_import = "list_import"
    other = "other"


class BudgetStatus(StrEnum):
    approved = "approved"
    planned = "planned"
    needs_approval = "needs_approval"
    grant = "grant"
    none = "none"
    unknown = "unknown"


class Timeline(StrEnum):
    now = "now"
    quarter = "quarter"
    half_year = "half_year"
    year = "year"
    later = "later"
    unknown = "unknown"


class DecisionRole(StrEnum):
    decision_maker = "decision_maker"
    influencer = "influencer"
    user = "user"
    unknown = "unknown"


class Readiness(StrEnum):
    ready = "ready"
    in_progress = "in_progress"
    not_started = "not_started"
    unknown = "unknown"


class EventType(StrEnum):
    demo_request = "demo_request"
    pricing_page_view = "pricing_page_view"
    implementation_page_view = "implementation_page_view"
    solution_page_view = "solution_page_view"
    webinar_attended = "webinar_attended"
    content_download = "content_download"
    form_fill = "form_fill"
    site_return_visit = "site_return_visit"
    email_click = "email_click"
    call_completed = "call_completed"
    meeting_held = "meeting_held"
    conference_attended = "conference_attended"


class Stage(StrEnum):
    inquiry = "inquiry"
    mql = "mql"
    sal = "sal"
    sql = "sql"
    nurture = "nurture"
    disqualified = "disqualified"
    intake_ready = "intake_ready"
    redirect = "redirect"


# Where an unknown value lands, per enum; None means "drop it" (events have no catch-all type).
_FALLBACK: dict[type[StrEnum], StrEnum | None] = {
    OrgType: OrgType.other,
    OrgKind: OrgKind.other,
    CareSetting: CareSetting.other,
    Source: Source.other,
    BudgetStatus: BudgetStatus.unknown,
    Timeline: Timeline.unknown,
    DecisionRole: DecisionRole.unknown,
    Readiness: Readiness.unknown,
}

LENIENT_ENUM_FIELDS: dict[str, type[StrEnum]] = {
    "org_type": OrgType,
    "org_kind": OrgKind,
    "care_setting": CareSetting,
    "source": Source,
    "latest_source": Source,
    "budget_status": BudgetStatus,
    "timeline": Timeline,
    "decision_role": DecisionRole,
    "security_review": Readiness,
    "baa_status": Readiness,
    "privacy_review": Readiness,
    "implementation_staffing": Readiness,
}
"""Enumerated fields whose unknown values degrade to their fallback with a warning."""

ENUM_FIELDS: dict[str, type[StrEnum]] = {**LENIENT_ENUM_FIELDS, "lead_kind": LeadKind, "manual_stage": Stage,
                                         "stage": Stage}
"""Every enumerated canonical field and its enum: the one table (mappings validate value maps by it)."""


def coerce_enum(enum: type[StrEnum], value: Any) -> StrEnum | None:
    """The enum member for ``value`` (case- and separator-insensitive), or None when unknown."""
    if isinstance(value, enum):
        return value
    if value is None:
        return None
    key = str(value).strip().lower().replace("-", "_").replace(" ", "_")
    try:
        return enum(key)
    except ValueError:
        return None


class Discovery(BaseModel):
    """What sales confirmed on a discovery call."""

    model_config = ConfigDict(extra="forbid")

    need_confirmed: bool = False
    timeline_confirmed: bool = False
    authority_confirmed: bool = False
    budget_path_known: bool = False


class Event(BaseModel):
    """One engagement event. ``origin`` says where it was read: the CRM object and record id
    (``hubspot calls 901``, ``salesforce CampaignMember 00v...``) or property
    (``hubspot contacts.recent_conversion_date``); ids and field names only, never text."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: EventType
    at: datetime
    origin: str | None = None

    @field_validator("at")
    @classmethod
    def _aware(cls, at: datetime) -> datetime:
        return at if at.tzinfo else at.replace(tzinfo=timezone.utc)

    @model_serializer(mode="wrap")
    def _without_unknown_origin(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        if data.get("origin") is None:
            data.pop("origin", None)
        return data


class Outcome(BaseModel):
    """What happened to the lead in the CRM after qualification (read-only; never written back):
    the CRM's own lead status and lifecycle stage with its dates, conversion, and the opportunity
    (Salesforce: the converted opportunity; HubSpot: the most advanced associated deal)."""

    model_config = ConfigDict(extra="forbid")

    lead_status: str | None = None
    lifecycle_stage: str | None = None
    became_lead_at: datetime | None = None
    became_mql_at: datetime | None = None
    became_sql_at: datetime | None = None
    became_opportunity_at: datetime | None = None
    became_customer_at: datetime | None = None
    converted: bool | None = None
    converted_at: datetime | None = None
    opportunity_id: str | None = None
    opportunity_stage: str | None = None
    opportunity_closed: bool | None = None
    opportunity_won: bool | None = None
    opportunity_amount: float | None = None
    opportunity_created_at: datetime | None = None
    opportunity_close_date: date | None = None

    @property
    def is_empty(self) -> bool:
        return all(value is None for value in self.__dict__.values())


class PatientInquiry(BaseModel):
    """A patient's own inquiry. Can be health information: never logged or audited as text."""

    model_config = ConfigDict(extra="forbid")

    service_requested: str | None = None
    payer: str | None = None
    zip: str | None = None
    scheduling_ready: bool | None = None


class Lead(BaseModel):
    """One lead in canonical form; see the module docstring and docs/canonical-model.md."""

    model_config = ConfigDict(extra="forbid", validate_assignment=False)

    # identity
    crm: Crm
    crm_id: str = Field(min_length=1)
    email: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    job_title: str | None = None
    lead_kind: LeadKind = LeadKind.b2b

    # organization
    company_name: str | None = None
    company_domain: str | None = None
    crm_company_id: str | None = None
    npi: str | None = None
    org_type: OrgType | None = None
    org_kind: OrgKind | None = None
    specialty: str | None = None
    care_setting: CareSetting | None = None
    provider_count: int | None = Field(default=None, ge=0)
    bed_count: int | None = Field(default=None, ge=0)
    location_count: int | None = Field(default=None, ge=0)
    employee_count: int | None = Field(default=None, ge=0)  # size signals when no bed/provider count is known
    annual_revenue: float | None = Field(default=None, ge=0)
    ccn: str | None = None  # CMS Certification Number (Medicare provider number)
    city: str | None = None
    state: str | None = None
    country: str | None = None
    ehr_vendor: str | None = None
    industry: str | None = None  # the CRM's industry value as read (free text)

    # channel
    source: Source = Source.other
    latest_source: Source | None = None
    source_detail: str | None = None  # the CRM's drill-down (HubSpot hs_analytics_source_data_1)
    campaign: str | None = None  # campaign or keyword (HubSpot source_data_2; Salesforce campaign name)

    # declared inputs
    pain_point: str | None = None
    budget_status: BudgetStatus = BudgetStatus.unknown
    timeline: Timeline = Timeline.unknown
    decision_role: DecisionRole = DecisionRole.unknown
    security_review: Readiness = Readiness.unknown
    baa_status: Readiness = Readiness.unknown
    privacy_review: Readiness = Readiness.unknown
    implementation_staffing: Readiness = Readiness.unknown

    discovery: Discovery = Field(default_factory=Discovery)
    events: list[Event] = Field(default_factory=list)

    # sales-owned
    sales_accepted: bool = False
    manual_stage: Stage | None = None

    patient: PatientInquiry | None = None
    outcome: Outcome | None = None

    # outputs
    fit_score: int | None = Field(default=None, ge=0, le=100)
    engagement_score: int | None = Field(default=None, ge=0, le=100)
    lead_score: int | None = Field(default=None, ge=0, le=100)
    stage: Stage | None = None
    reasons: list[str] = Field(default_factory=list)
    next_step: str | None = None
    model_version: str | None = None
    scored_at: datetime | None = None

    # bookkeeping
    modified_at: datetime | None = None
    warnings: list[str] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _degrade_unknown_enums(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        warnings = list(data.get("warnings") or [])
        patient = str(data.get("lead_kind") or "").strip().lower() == "patient"
        for name, enum in LENIENT_ENUM_FIELDS.items():
            raw = data.get(name)
            if raw is None or raw == "":
                data.pop(name, None)
                continue
            member = coerce_enum(enum, raw)
            if member is None:
                fallback = _FALLBACK[enum]
                warnings.append(f"{name}: unknown value {unknown_value(raw, patient)} read as {fallback}")
                member = fallback
            data[name] = member
        for name, enum in (("manual_stage", Stage), ("stage", Stage)):
            raw = data.get(name)
            if raw in (None, ""):
                data[name] = None
                continue
            member = coerce_enum(enum, raw)
            if member is None:
                warnings.append(f"{name}: unknown value {unknown_value(raw, patient)} ignored")
            data[name] = member
        if data.get("events"):
            data["events"] = _known_events(data["events"], warnings)
        if warnings:
            data["warnings"] = warnings
        return data

    @model_validator(mode="after")
    def _derive_decision_role(self) -> "Lead":
        if self.decision_role is DecisionRole.unknown and self.job_title:
            self.decision_role = DecisionRole(decision_role_from_title(self.job_title))
        return self

    @property
    def display_name(self) -> str:
        return f"{self.crm}:{self.crm_id}"


def _known_events(events: list[Any], warnings: list[str]) -> list[Any]:
    kept = []
    for event in events:
        raw_type = event.get("type") if isinstance(event, dict) else getattr(event, "type", None)
        if isinstance(event, Event) or coerce_enum(EventType, raw_type) is not None:
            kept.append(event)
        else:
            warnings.append(f"events: unknown event type {unknown_value(raw_type, patient=False)} dropped")
    return kept


CANONICAL_FIELDS: frozenset[str] = frozenset(
    [name for name in Lead.model_fields if name not in {"discovery", "patient", "outcome", "events", "warnings"}]
    + [f"discovery.{name}" for name in Discovery.model_fields]
    + [f"patient.{name}" for name in PatientInquiry.model_fields]
    + [f"outcome.{name}" for name in Outcome.model_fields]
)
"""Every canonical field a mapping may name (nested ones dotted)."""

OUTPUT_FIELDS: frozenset[str] = frozenset(
    {"fit_score", "engagement_score", "lead_score", "stage", "reasons", "next_step", "model_version", "scored_at"}
)
