"""The hospital kind in the model (``profile.org_kinds``), size from the CRMs' employee and revenue
fields, and reasons that agree with each other."""

from __future__ import annotations

from pathlib import Path

import yaml
from scoring_leads import NOW, health_system_cio

from scoring import load_model, qualify
from scoring.model import DEFAULT_MODEL_PATH


def model_with(tmp_path: Path, edit) -> object:
    data = yaml.safe_load(DEFAULT_MODEL_PATH.read_text())
    edit(data)
    path = tmp_path / "model.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_model(path)


def test_the_kind_rule_changes_fit_and_says_why(model):
    general = qualify(health_system_cio(org_type="hospital", org_kind="general_acute"), NOW, model)
    critical = qualify(health_system_cio(org_type="hospital", org_kind="critical_access"), NOW, model)
    federal = qualify(health_system_cio(org_type="hospital", org_kind="federal_va"), NOW, model)
    assert general.fit_score > critical.fit_score > federal.fit_score
    assert general.lead_score > critical.lead_score > federal.lead_score
    fit_reasons = {name: q.breakdown["criteria"]["fit"]["reasons"] for name, q in
                   (("general", general), ("critical", critical), ("federal", federal))}
    assert "organization type fits: health system / hospital (general acute care hospital)" in fit_reasons["general"]
    assert "critical access hospital: acceptable for the health system / hospital profile, not ideal" in fit_reasons["critical"]
    assert "VA (federal) facility: not in the health system / hospital profile" in fit_reasons["federal"]


def test_an_unknown_kind_scores_as_before(model):
    unknown = qualify(health_system_cio(org_type="hospital"), NOW, model)
    general = qualify(health_system_cio(org_type="hospital", org_kind="general_acute"), NOW, model)
    assert unknown.fit_score == general.fit_score
    assert "organization type fits: health system / hospital" in unknown.breakdown["criteria"]["fit"]["reasons"]


def test_a_model_that_excludes_psychiatric_hospitals_disqualifies_them_and_says_so(tmp_path):
    def exclude_psychiatric(data):
        kinds = data["segments"]["health_system"]["profile"]["org_kinds"]
        kinds["acceptable"].remove("psychiatric")
        kinds["excluded"] = ["psychiatric"]

    model = model_with(tmp_path, exclude_psychiatric)
    q = qualify(health_system_cio(org_type="hospital", org_kind="psychiatric"), NOW, model)
    assert q.stage.value == "disqualified"
    assert q.reasons[0] == "disqualified: psychiatric hospital outside the profile"
    assert "psychiatric hospital: outside the health system / hospital profile" in q.reasons_full


def test_employees_and_revenue_are_size_only_when_no_count_is_known(model):
    no_size = qualify(health_system_cio(bed_count=None), NOW, model)
    employees = qualify(health_system_cio(bed_count=None, employee_count=2400), NOW, model)
    small = qualify(health_system_cio(bed_count=None, annual_revenue=8_000_000), NOW, model)
    beds = qualify(health_system_cio(bed_count=40, employee_count=2400), NOW, model)
    fit = {name: q.breakdown["criteria"]["fit"]["reasons"] for name, q in
           (("none", no_size), ("employees", employees), ("small", small), ("beds", beds))}
    assert "size unknown: enrich beds/providers" in fit["none"]
    assert "size fits the ideal profile (2,400 employees; no beds/providers known)" in fit["employees"]
    assert "smaller than the profile ($8M annual revenue; no beds/providers known)" in fit["small"]
    assert "size within the profile (40 beds)" in fit["beds"]  # a bed count wins over the employee count
    assert employees.fit_score > no_size.fit_score > small.fit_score


def test_engagement_from_the_source_prior_alone_says_so_in_every_reason(model):
    q = qualify(health_system_cio(events=[], source="web_form"), NOW, model)
    assert q.engagement_score == 10
    stage = q.reasons[0]
    assert stage == ("nurture: good fit, engagement 10 (the source prior only) below the MQL gate (30)"
                     " of the segment 'health system / hospital'")
    assert "no activity recorded: engagement is the source prior only (web form, 10)" in q.reasons_full
    assert "no engagement recorded" not in q.reasons_full


def test_gate_reasons_name_the_segment_whose_gate_applies(model):
    unknown = qualify(health_system_cio(org_type=None, events=[]), NOW, model)
    assert unknown.segment == "unknown"
    assert unknown.reasons[0].startswith("inquiry: fit ")
    assert unknown.reasons[0].endswith("below the nurture gate (90) of the segment 'organization type unknown'")
    assert unknown.reasons[1] == "organization type unknown: enrich or ask"  # what to do, next to the gate
    mql = qualify(health_system_cio(), NOW, model)
    assert mql.reasons[0].endswith("the gates of the segment 'health system / hospital'")


def test_the_compact_field_keeps_whole_reasons_and_counts_the_rest(model):
    q = qualify(health_system_cio(events=[], bed_count=None, ehr_vendor=None, state=None, country=None), NOW, model)
    shown = q.reasons_compact
    assert len(shown) <= 255
    whole = [r for r in q.reasons if r in shown]
    assert shown.startswith("; ".join(whole))
    hidden = len(q.reasons) - len(whole)
    assert hidden > 0 and shown.endswith(f"(+{hidden} more in reasons detail)")
    assert all(r in q.reasons_full for r in q.reasons if r not in shown)
