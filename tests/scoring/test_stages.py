"""Every segment and gate, through qualify_batch."""

from __future__ import annotations

import json

import pytest

from leadflow.canonical import Lead, Stage
from scoring import apply_qualification, qualify, qualify_batch, segment_of
from scoring_leads import NOW, clinic_manager, days_ago, health_system_cio, patient_inquiry

CONFIRMED = {"need_confirmed": True, "timeline_confirmed": True, "authority_confirmed": True, "budget_path_known": True}


def test_clinic_operations_manager_with_demo_request_becomes_mql(model):
    q = qualify(clinic_manager(), NOW, model)
    assert q.segment == "practice_multi"
    assert q.stage is Stage.mql
    assert q.reasons[0].startswith("MQL:")
    assert "requested a demo" in q.reasons
    assert q.next_step.subject == "Sales reviews and accepts within 2 business days"
    assert q.next_step.due(NOW).isoformat() == "2026-11-27"


def test_clinic_manager_becomes_sql_once_discovery_confirms(model):
    q = qualify(clinic_manager(stage="mql", discovery=CONFIRMED), NOW, model)
    assert q.stage is Stage.sql and q.previous_stage is Stage.mql and q.stage_changed
    assert "security questionnaire and BAA" in q.next_step.subject


@pytest.mark.parametrize("missing", ["need_confirmed", "timeline_confirmed", "budget_path_known"])
def test_sql_needs_each_discovery_confirmation(model, missing):
    discovery = {**CONFIRMED, missing: False}
    q = qualify(clinic_manager(discovery=discovery), NOW, model)
    assert q.stage is Stage.mql


def test_sql_accepts_a_known_decision_process_instead_of_confirmed_authority(model):
    discovery = {**CONFIRMED, "authority_confirmed": False}
    lead = clinic_manager(job_title="Practice Administrator", discovery=discovery)  # decision maker by title
    assert qualify(lead, NOW, model).stage is Stage.sql


def test_sql_with_budget_status_planned_but_no_budget_path_flag(model):
    lead = clinic_manager(discovery={**CONFIRMED, "budget_path_known": False}, budget_status="planned")
    assert qualify(lead, NOW, model).stage is Stage.sql


def test_strong_fit_with_distant_timeline_is_nurtured_not_handed_to_sales(model):
    q = qualify(health_system_cio(timeline="later"), NOW, model)
    assert q.fit_score >= 90
    assert q.stage is Stage.nurture
    assert "distant timeline" in q.reasons[0]
    assert q.next_step.id == "nurture-enroll"


def test_good_fit_with_low_engagement_is_nurtured(model):
    q = qualify(health_system_cio(events=[], source="list_import"), NOW, model)
    assert q.stage is Stage.nurture and "engagement" in q.reasons[0]


def test_health_system_mql(model):
    q = qualify(health_system_cio(), NOW, model)
    assert (q.segment, q.stage) == ("health_system", Stage.mql)


def test_sal_only_when_sales_accepted(model):
    assert qualify(clinic_manager(), NOW, model).stage is Stage.mql
    q = qualify(clinic_manager(sales_accepted=True, stage="mql"), NOW, model)
    assert q.stage is Stage.sal
    assert any(r.startswith("for SQL, confirm on discovery") for r in q.reasons)


def test_sales_accepted_lead_is_not_demoted(model):
    lead = clinic_manager(sales_accepted=True, stage="sql", timeline="later", events=[])
    q = qualify(lead, NOW, model)
    assert q.stage is Stage.sql and not q.stage_changed
    assert "does not demote" in q.reasons[0]


def test_sales_accepted_lead_is_not_disqualified_by_leadflow(model):
    q = qualify(clinic_manager(sales_accepted=True, stage="sal", job_title="Nursing Student"), NOW, model)
    assert q.stage is Stage.sal
    assert "does not demote" in q.reasons[0] and "student" in q.reasons[0]


@pytest.mark.parametrize("manual", ["nurture", "sql", "disqualified"])
def test_manual_stage_is_never_overwritten(model, manual):
    q = qualify(clinic_manager(manual_stage=manual, stage=manual, discovery=CONFIRMED), NOW, model)
    assert q.stage.value == manual and not q.stage_changed
    assert q.reasons[0] == f"stage {manual} set by hand by sales: leadflow keeps it"


def test_manual_stage_on_a_patient_is_kept(model):
    lead = patient_inquiry(service_requested="brain surgery").model_copy(update={"manual_stage": Stage.intake_ready})
    assert qualify(lead, NOW, model).stage is Stage.intake_ready


def test_stage_moves_back_only_by_a_model_rule(model):
    # mql -> nurture by the timeline_distant rule
    q = qualify(clinic_manager(stage="mql", timeline="later"), NOW, model)
    assert q.stage is Stage.nurture and q.reasons[0].startswith("moved back from mql to nurture")
    # sql -> nurture by the same rule (not sales accepted)
    assert qualify(clinic_manager(stage="sql", timeline="later"), NOW, model).stage is Stage.nurture
    # sql -> mql: no rule, stays sql
    q = qualify(clinic_manager(stage="sql"), NOW, model)
    assert q.stage is Stage.sql and q.reasons[0].startswith("stays sql")


def test_unknown_segment_is_explicit(model):
    for org_type in (None, "other"):
        lead = clinic_manager(org_type=org_type)
        q = qualify(lead, NOW, model)
        assert segment_of(lead) == "unknown" and q.segment == "unknown"
        assert "organization type unknown: enrich or ask" in q.reasons
        assert q.stage is not Stage.mql  # conservative gates


@pytest.mark.parametrize(
    ("org_type", "extra", "segment"),
    [
        ("health_system", {}, "health_system"),
        ("hospital", {}, "health_system"),
        ("physician_practice", {"location_count": 1}, "practice_single"),
        ("clinic", {"location_count": None}, "practice_single"),
        ("clinic", {"location_count": 3}, "practice_multi"),
        ("payer", {}, "payer"),
        ("pharma", {}, "pharma"),
        ("digital_health", {}, "digital_health"),
    ],
)
def test_segment_from_org_type(model, org_type, extra, segment):
    lead = clinic_manager(org_type=org_type, **extra)
    q = qualify(lead, NOW, model)
    assert q.segment == segment
    assert q.stage in {Stage.mql, Stage.nurture, Stage.inquiry}


def test_payer_pharma_and_digital_health_can_reach_mql(model):
    for org_type in ("payer", "pharma", "digital_health"):
        lead = health_system_cio(org_type=org_type, care_setting="virtual", timeline="quarter")
        assert qualify(lead, NOW, model).stage is Stage.mql, org_type


def test_single_location_practice_below_size_is_weaker(model):
    small = qualify(clinic_manager(location_count=1, provider_count=1), NOW, model)
    big = qualify(clinic_manager(location_count=1, provider_count=12), NOW, model)
    assert small.segment == big.segment == "practice_single"
    assert small.fit_score < big.fit_score
    assert "smaller than the profile (1 providers)" in small.breakdown["criteria"]["fit"]["reasons"]


def test_low_fit_low_engagement_is_an_inquiry(model):
    lead = clinic_manager(specialty="Podiatry", care_setting="other", provider_count=1, location_count=1,
                          ehr_vendor="homegrown", events=[], source="list_import")
    q = qualify(lead, NOW, model)
    assert q.stage is Stage.inquiry and q.next_step.id == "inquiry-enrich"


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"job_title": "Medical Student"}, "title indicates a student or trainee, not a buyer"),
        ({"company_domain": "rivalhealth.io", "email": "x@rivalhealth.io"}, "competitor domain"),
        ({"email": "spy@carequeue.ai"}, "competitor domain"),
        ({"job_title": "Account Executive"}, "title indicates a vendor, not a buyer"),
        ({"company_domain": "medsupplyco.com"}, "vendor domain, not a buyer"),
        ({"country": "Canada"}, "outside the geography served"),
        ({"specialty": "Veterinary Surgery"}, "specialty outside the profile"),
        ({"specialty": "General Dentistry"}, "specialty outside the profile"),
    ],
)
def test_disqualification_reasons(model, overrides, reason):
    q = qualify(clinic_manager(**overrides), NOW, model)
    assert q.stage is Stage.disqualified
    assert q.reasons[0] == f"disqualified: {reason}"
    assert q.next_step.id == "disqualified-close"


def test_excluded_care_setting_disqualifies_single_practice(model):
    q = qualify(clinic_manager(location_count=1, care_setting="inpatient"), NOW, model)
    assert q.stage is Stage.disqualified and "care setting" in q.reasons[0]


# --- patients ---------------------------------------------------------------------------------


def test_patient_that_fits_is_intake_ready(model):
    q = qualify(patient_inquiry(), NOW, model)
    assert (q.segment, q.stage) == ("patient", Stage.intake_ready)
    assert "requested service is offered" in q.reasons
    assert q.next_step.subject == "Call to schedule intake within 24 hours"
    assert q.next_step.due(NOW).isoformat() == "2026-11-26"


@pytest.mark.parametrize(
    ("patient", "stage", "reason"),
    [
        ({"service_requested": "knee replacement surgery"}, Stage.redirect, "requested service is not offered"),
        ({"zip": "94110"}, Stage.redirect, "location is not served"),
        ({"payer": "Acme Insurance"}, Stage.redirect, "payer not accepted"),
        ({"scheduling_ready": False}, Stage.nurture, "not ready to schedule yet"),
        ({"scheduling_ready": None}, Stage.nurture, "readiness to schedule unknown: ask"),
        ({"service_requested": None}, Stage.nurture, "requested service not stated: ask at intake"),
    ],
)
def test_patient_that_does_not_fit_is_redirected_or_nurtured(model, patient, stage, reason):
    q = qualify(patient_inquiry(**patient), NOW, model)
    assert q.stage is stage
    assert reason in q.reasons_full


def test_patient_location_from_state_when_no_zip(model):
    lead = patient_inquiry(zip=None).model_copy(update={"state": "MA"})
    assert qualify(lead, NOW, model).stage is Stage.intake_ready


PATIENT_TEXT = ["knee replacement surgery", "migraines", "Acme Insurance", "94110", "annual physical", "Aetna", "02139"]


@pytest.mark.parametrize("patient", [{}, {"service_requested": "knee replacement surgery"}, {"payer": "Acme Insurance"},
                                     {"zip": "94110"}, {"scheduling_ready": False}])
def test_reasons_never_quote_patient_free_text(model, patient):
    q = qualify(patient_inquiry(**patient), NOW, model)
    written = json.dumps([q.reasons, q.reasons_compact, q.reasons_full, q.breakdown, q.next_step.to_dict()]).lower()
    for text in PATIENT_TEXT:
        assert text.lower() not in written


# --- batch, reasons, outputs --------------------------------------------------------------------


def test_buying_group_is_grouped_by_organization(model):
    alone = qualify(clinic_manager(), NOW, model)
    colleagues = [
        clinic_manager(crm_id="c-2", job_title="Medical Director", email="md@northshoreortho.com"),
        clinic_manager(crm_id="c-3", job_title="Compliance Officer", email="co@northshoreortho.com"),
        clinic_manager(crm_id="c-4", job_title="CFO", email="cfo@northshoreortho.com"),
    ]
    results = qualify_batch([clinic_manager(), *colleagues], NOW, model)
    assert [q.crm_id for q in results] == ["c-1", "c-2", "c-3", "c-4"]
    grouped = results[0].breakdown["criteria"]["authority"]
    assert grouped["score"] > alone.breakdown["criteria"]["authority"]["score"]
    assert any("buying group covers administrator, physician, compliance, finance" in r for r in grouped["reasons"])
    assert any("a decision maker at the organization is engaged" in r for r in grouped["reasons"])


def test_org_key_prefers_company_id_then_domain_then_name(model):
    from scoring import org_key

    assert org_key(clinic_manager(crm_company_id="42")) == "id:42"
    assert org_key(clinic_manager()) == "domain:northshoreortho.com"
    assert org_key(clinic_manager(company_domain=None)) == "name:north shore orthopedics"
    assert org_key(clinic_manager(company_domain=None, company_name=None)) is None


def test_unknown_is_not_zero_and_says_what_to_ask(model):
    q = qualify(clinic_manager(timeline="unknown", budget_status="unknown"), NOW, model)
    criteria = q.breakdown["criteria"]
    assert criteria["timeline"]["score"] > 0 and criteria["budget"]["score"] > 0
    assert "timeline unknown: ask on discovery" in criteria["timeline"]["reasons"]
    assert "budget unknown: ask on discovery" in criteria["budget"]["reasons"]


def test_reasons_forms(model):
    q = qualify(health_system_cio(), NOW, model)
    assert len(q.reasons_compact) <= 255
    assert q.reasons_compact.startswith(q.reasons[0])
    assert q.reasons_full.startswith("Stage: mql.")
    assert "+ decision maker by title" in q.reasons_full
    assert "- security review unknown: ask" in q.reasons_full
    breakdown = json.loads(json.dumps(q.breakdown))
    assert set(breakdown["criteria"]) == {"fit", "need", "authority", "budget", "timeline", "compliance", "engagement"}
    assert breakdown["criteria"]["fit"]["weight"] == 0.3
    assert q.reasons[0] in q.next_step.body


def test_compact_reasons_keep_the_most_important_whole_and_count_the_rest():
    from scoring.reasons import compact

    reasons = ["a" * 150, "b" * 60, "c" * 40, "d" * 10]
    assert compact(reasons) == "a" * 150 + "; " + "b" * 60 + " (+2 more in reasons detail)"
    assert compact(["a" * 100, "b" * 100]) == "a" * 100 + "; " + "b" * 100  # all fit: no count
    assert compact(["x" * 300]) == "x" * 254 + "…"
    cut = compact(["x" * 300, "y"])
    assert len(cut) == 255 and cut.endswith("… (+1 more in reasons detail)")


def test_apply_qualification_sets_outputs(model):
    lead = clinic_manager()
    q = qualify(lead, NOW, model)
    updated = apply_qualification(lead, q)
    assert isinstance(updated, Lead) and updated is not lead
    assert (updated.stage, updated.lead_score, updated.fit_score, updated.engagement_score) == (
        q.stage, q.lead_score, q.fit_score, q.engagement_score)
    assert updated.next_step == q.next_step.subject and updated.reasons == q.reasons
    assert updated.model_version == model.version and updated.scored_at == NOW
    assert lead.stage is None  # the input is untouched
    Lead.model_validate(updated.model_dump(mode="json"))  # still a valid canonical lead


def test_engagement_decays_and_caps(model):
    fresh = qualify(clinic_manager(events=[{"type": "demo_request", "at": days_ago(0)}]), NOW, model)
    old = qualify(clinic_manager(events=[{"type": "demo_request", "at": days_ago(21)}]), NOW, model)
    many = qualify(clinic_manager(events=[{"type": "email_click", "at": days_ago(0)}] * 50), NOW, model)
    prior = model.source_prior["demo_request"]
    assert fresh.engagement_score == 45 + prior
    assert old.engagement_score == int(22.5 + prior + 0.5)  # one half-life, rounded half up
    assert many.engagement_score == 8 + prior  # email_click cap


def test_source_prior_ranks_referral_above_paid_and_list_imports(model):
    p = model.source_prior
    assert min(p["referral"], p["phone"], p["demo_request"]) > max(p["paid_search"], p["paid_social"], p["list_import"])


def test_qualify_batch_restores_the_garbage_collector(model):
    import gc

    assert gc.isenabled()
    qualify_batch([clinic_manager(), patient_inquiry()], NOW, model)
    assert gc.isenabled()


def test_naive_clock_is_read_as_utc(model):
    aware = qualify(clinic_manager(), NOW, model)
    naive = qualify(clinic_manager(), NOW.replace(tzinfo=None), model)
    assert (naive.engagement_score, naive.stage, naive.scored_at) == (aware.engagement_score, aware.stage, NOW)


def test_a_leads_score_does_not_depend_on_which_colleagues_share_its_page():
    from leadflow.canonical import Lead
    from scoring import load_model, member_of, qualify_batch

    model = load_model()
    now = NOW
    base = dict(crm="hubspot", org_type="hospital", company_name="Mercy Health", crm_company_id="c1",
                state="OH", country="US", timeline="quarter", budget_status="planned")
    buyer = Lead(crm_id="1", job_title="VP Operations", **base)
    counsel = Lead(crm_id="2", job_title="Chief Compliance Officer", **base)

    same_page = qualify_batch([buyer, counsel], now, model)[0]
    own_page = qualify_batch([buyer], now, model, members=[member_of(counsel)])[0]
    alone = qualify_batch([buyer], now, model)[0]
    assert own_page.lead_score == same_page.lead_score and own_page.reasons == same_page.reasons
    assert own_page.breakdown["criteria"] == same_page.breakdown["criteria"]
    assert alone.breakdown["criteria"]["compliance"]["score"] < own_page.breakdown["criteria"]["compliance"]["score"]
