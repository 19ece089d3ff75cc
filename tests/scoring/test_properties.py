"""Properties of the qualification engine (hypothesis)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leadflow.canonical import EventType, Lead
from scoring import load_model, qualify, qualify_batch
from scoring_leads import NOW

MODEL = load_model()
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

optional = st.one_of
event = st.fixed_dictionaries(
    {
        "type": st.sampled_from([e.value for e in EventType]),
        "at": st.floats(min_value=-2, max_value=400).map(lambda d: (NOW - timedelta(days=d)).isoformat()),
    }
)
b2b_fields = st.fixed_dictionaries(
    {
        "crm": st.just("hubspot"),
        "crm_id": st.just("x-1"),
        "job_title": st.sampled_from([None, "CEO", "Practice Manager", "Medical Director", "RN", "Student",
                                      "Compliance Officer", "Director of Procurement", "CFO", "Analyst"]),
        "company_domain": st.sampled_from([None, "acme.org", "rivalhealth.io"]),
        "org_type": st.sampled_from([None, "health_system", "hospital", "physician_practice", "clinic", "payer",
                                     "pharma", "digital_health", "other"]),
        "specialty": st.sampled_from([None, "Family Medicine", "Cardiology", "Veterinary", "Dentist", "Podiatry"]),
        "care_setting": st.sampled_from([None, "inpatient", "ambulatory", "home", "post_acute", "virtual", "other"]),
        "provider_count": optional(st.none(), st.integers(0, 5000)),
        "bed_count": optional(st.none(), st.integers(0, 3000)),
        "location_count": optional(st.none(), st.integers(0, 200)),
        "state": st.sampled_from([None, "MA", "TX", "ca"]),
        "country": st.sampled_from([None, "US", "USA", "Canada", "Germany"]),
        "ehr_vendor": st.sampled_from([None, "Epic", "athenahealth", "Greenway", "paper"]),
        "source": st.sampled_from(["web_form", "demo_request", "phone", "paid_search", "referral", "list_import",
                                   "other", "partner"]),
        "pain_point": st.one_of(st.none(), st.text(max_size=60),
                                st.sampled_from(["staff burnout", "claims denials", "dashboards"])),
        "budget_status": st.sampled_from(["approved", "planned", "needs_approval", "grant", "none", "unknown"]),
        "timeline": st.sampled_from(["now", "quarter", "half_year", "year", "later", "unknown"]),
        "security_review": st.sampled_from(["ready", "in_progress", "not_started", "unknown"]),
        "baa_status": st.sampled_from(["ready", "in_progress", "not_started", "unknown"]),
        "discovery": st.fixed_dictionaries({k: st.booleans() for k in (
            "need_confirmed", "timeline_confirmed", "authority_confirmed", "budget_path_known")}),
        "events": st.lists(event, max_size=12),
        "sales_accepted": st.booleans(),
        "manual_stage": st.sampled_from([None, None, None, "sql", "nurture"]),
        "stage": st.sampled_from([None, "inquiry", "mql", "sal", "sql", "nurture", "disqualified"]),
    }
)
patient_fields = st.fixed_dictionaries(
    {
        "crm": st.just("salesforce"),
        "crm_id": st.just("p-1"),
        "lead_kind": st.just("patient"),
        "source": st.sampled_from(["web_form", "phone", "referral"]),
        "patient": st.fixed_dictionaries({
            "service_requested": st.one_of(st.none(), st.text(max_size=40), st.just("primary care")),
            "payer": st.one_of(st.none(), st.text(max_size=20), st.just("Aetna")),
            "zip": st.one_of(st.none(), st.sampled_from(["02139", "94110", "0"])),
            "scheduling_ready": st.sampled_from([None, True, False]),
        }),
        "events": st.lists(event, max_size=5),
    }
)
any_lead = st.one_of(b2b_fields, patient_fields)


def build(data: dict[str, Any]) -> Lead:
    return Lead.model_validate(data)


def scores(data: dict[str, Any], now=NOW) -> tuple[int, int, int]:
    q = qualify(build(data), now, MODEL)
    return q.fit_score, q.engagement_score, q.lead_score


@FAST
@given(any_lead)
def test_scores_stay_in_range(data):
    q = qualify(build(data), NOW, MODEL)
    for value in (q.fit_score, q.engagement_score, q.lead_score):
        assert isinstance(value, int) and 0 <= value <= 100
    assert len(q.reasons_compact) <= 255
    for part in q.breakdown["criteria"].values():
        assert 0 <= part["score"] <= 100


@FAST
@given(any_lead, event)
def test_adding_an_event_never_lowers_a_score(data, extra):
    before = scores(data)
    after = scores({**data, "events": [*data["events"], extra]})
    assert all(a >= b for a, b in zip(after, before))


POSITIVE_SIGNALS = [
    {"budget_status": "approved"},
    {"timeline": "now"},
    {"security_review": "ready"},
    {"baa_status": "ready"},
]


@FAST
@given(b2b_fields, st.sampled_from(POSITIVE_SIGNALS + ["need_confirmed", "timeline_confirmed",
                                                        "authority_confirmed", "budget_path_known"]))
def test_a_positive_declared_or_discovery_signal_never_lowers_a_score(data, signal):
    if isinstance(signal, str):
        better = {**data, "discovery": {**data["discovery"], signal: True}}
    else:
        field, value = next(iter(signal.items()))
        if data[field] != "unknown":
            data = {**data, field: "unknown"}
        better = {**data, **signal}
    assert all(a >= b for a, b in zip(scores(better), scores(data)))


@FAST
@given(b2b_fields, st.sampled_from(["Compliance Officer", "CFO", "Medical Director", "Director of Procurement", "CEO"]))
def test_another_contact_at_the_organization_never_lowers_a_score(data, title):
    data = {**data, "company_domain": "acme.org", "manual_stage": None}
    alone = qualify_batch([build(data)], NOW, MODEL)[0]
    colleague = build({**data, "crm_id": "x-2", "job_title": title, "events": []})
    together = qualify_batch([build(data), colleague], NOW, MODEL)[0]
    assert together.lead_score >= alone.lead_score
    assert together.breakdown["criteria"]["authority"]["score"] >= alone.breakdown["criteria"]["authority"]["score"]


@FAST
@given(any_lead, st.floats(min_value=0, max_value=800))
def test_decay_never_raises_engagement(data, later_days):
    earlier = scores(data)[1]
    later = scores(data, NOW + timedelta(days=later_days))[1]
    assert later <= earlier


@FAST
@given(st.lists(any_lead, min_size=1, max_size=4))
def test_same_input_and_clock_give_the_same_output(items):
    leads = [build({**item, "crm_id": f"id-{i}"}) for i, item in enumerate(items)]
    first = qualify_batch(leads, NOW, MODEL)
    again = qualify_batch([build(lead.model_dump(mode="json")) for lead in leads], NOW, MODEL)
    assert [q.crm_id for q in first] == [lead.crm_id for lead in leads]
    for a, b in zip(first, again):
        assert a.summary(NOW) == b.summary(NOW)
        assert (a.reasons_full, a.breakdown, a.reasons_compact) == (b.reasons_full, b.breakdown, b.reasons_compact)
