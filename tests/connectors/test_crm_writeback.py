"""writeback.plan_update: only changed fields, per-field policies, one update per object."""

from __future__ import annotations

from datetime import datetime, timezone

from connectors.crm.writeback import plan_update, plan_updates
from leadflow.canonical import Lead
from mappings import load_mapping

HS = load_mapping("hubspot")
SF = load_mapping("salesforce")
NOW = datetime(2026, 1, 2, tzinfo=timezone.utc)


def scored(crm="hubspot", **extra) -> Lead:
    data = dict(crm=crm, crm_id="101", crm_company_id="9001" if crm == "hubspot" else None, fit_score=80,
                engagement_score=40, lead_score=64, stage="mql", reasons=["Health system", "Demo requested"],
                next_step="Book discovery call", model_version="m1", scored_at=NOW, org_type="health_system")
    data.update(extra)
    return Lead.model_validate(data)


def fields_of(updates, obj="lead"):
    return next((u.fields for u in updates if u.object == obj), {})


def test_first_write_sets_outputs_and_fills_blank_company_fields():
    updates = plan_update(scored(), {}, {}, HS)
    assert [u.object for u in updates] == ["lead", "company"]
    lead_fields = fields_of(updates)
    assert lead_fields["leadflow_lead_score"] == "64" and lead_fields["leadflow_stage"] == "mql"
    assert lead_fields["leadflow_reasons"] == "Health system; Demo requested"
    assert lead_fields["leadflow_reasons_detail"] == "Health system\nDemo requested"
    assert "leadflow_scored_at" in lead_fields
    company = next(u for u in updates if u.object == "company")
    assert company.object_id == "9001" and company.fields == {"leadflow_org_type": "health_system"}
    assert {c.field for c in company.changes} == {"company.leadflow_org_type"}


def test_nothing_changed_means_no_update_even_if_scored_at_moved():
    lead = scored()
    first = plan_update(lead, {}, {}, HS)
    current = {c.field: c.new for u in first for c in u.changes}
    current["leadflow_scored_at"] = "2025-01-01T00:00:00.000Z"  # an older scoring time
    assert plan_update(lead, current, current, HS) == []


def test_only_differing_fields_are_sent():
    lead = scored()
    current = {c.field: c.new for u in plan_update(lead, {}, {}, HS) for c in u.changes}
    current["leadflow_lead_score"] = "50.0"
    current["leadflow_scored_at"] = "2025-06-01T00:00:00Z"
    updates = plan_update(lead, current, current, HS)
    assert len(updates) == 1
    assert set(updates[0].fields) == {"leadflow_lead_score", "leadflow_scored_at"}
    change = next(c for c in updates[0].changes if c.canonical == "lead_score")
    assert (change.old, change.new) == ("50.0", "64")


def test_if_blank_never_overwrites():
    updates = plan_update(scored(), {"company.leadflow_org_type": "payer"}, {}, HS)
    assert "leadflow_org_type" not in fields_of(updates, "company")


def test_never_over_manual():
    lead = scored()
    # a person set the stage; leadflow never wrote it -> manual, left alone
    assert "leadflow_stage" not in fields_of(plan_update(lead, {"leadflow_stage": "sql"}, {}, HS))
    # leadflow wrote "inquiry", a person changed it to "sql" -> manual, left alone
    assert "leadflow_stage" not in fields_of(plan_update(lead, {"leadflow_stage": "sql"}, {"leadflow_stage": "inquiry"}, HS))
    # still what leadflow last wrote -> leadflow may move it
    assert fields_of(plan_update(lead, {"leadflow_stage": "inquiry"}, {"leadflow_stage": "inquiry"}, HS))["leadflow_stage"] == "mql"
    # blank -> fill
    assert fields_of(plan_update(lead, {"leadflow_stage": ""}, {}, HS))["leadflow_stage"] == "mql"


def test_salesforce_company_fields_go_on_the_lead_record():
    updates = plan_update(scored("salesforce", crm_id="00Q1"), {}, {}, SF)
    assert len(updates) == 1 and updates[0].object == "lead" and updates[0].object_id == "00Q1"
    assert updates[0].fields["Org_Type__c"] == "Health System"
    assert updates[0].fields["Lead_Score__c"] == 64
    assert updates[0].fields["Lead_Stage__c"] == "MQL"


def test_hubspot_without_company_skips_company_fields():
    updates = plan_update(scored(crm_company_id=None), {}, {}, HS)
    assert [u.object for u in updates] == ["lead"]


def test_plan_updates_for_a_page():
    leads = [scored(crm_id=str(i)) for i in range(3)]
    updates = plan_updates(leads, {}, {}, HS)
    assert {u.crm_id for u in updates} == {"0", "1", "2"}


def test_unread_field_is_compared_with_the_last_written_value():
    lead = scored("salesforce", crm_id="00Q1")
    first = plan_update(lead, {}, {}, SF)[0]
    written = {c.field: c.new for c in first.changes}
    current = {k: v for k, v in written.items() if k != "Score_Reasons_Detail__c"}  # not read back
    assert plan_update(lead, current, written, SF) == []
    changed = lead.model_copy(update={"reasons": ["Something new"]})
    fields = plan_update(changed, current, written, SF)[0].fields
    assert fields["Score_Reasons_Detail__c"] == "Something new"


def _native(crm: str):
    import yaml

    from mappings import MAPPINGS_DIR, parse_mapping

    data = yaml.safe_load((MAPPINGS_DIR / f"{crm}.yaml").read_text())
    data["native_stages"]["enabled"] = True
    return parse_mapping(data, f"{crm}.yaml")


HS_NATIVE = _native("hubspot")
SF_NATIVE = _native("salesforce")


def test_native_stage_moves_back_by_a_clear_then_a_set_only_from_a_value_leadflow_wrote():
    current = {"lifecyclestage": "marketingqualifiedlead"}
    ours = plan_update(scored(stage="nurture"), current, {"lifecyclestage": "marketingqualifiedlead"}, HS_NATIVE)[0]
    native = [c for c in ours.changes if c.canonical == "native_stage"]
    assert [(c.old, c.new) for c in native] == [("marketingqualifiedlead", None), (None, "lead")]
    assert ours.clear_first == ["lifecyclestage"] and ours.fields["lifecyclestage"] == "lead"
    not_ours = plan_update(scored(stage="nurture"), current, {}, HS_NATIVE)[0]  # a form's or a person's
    assert "lifecyclestage" not in not_ours.fields and not_ours.clear_first == []
    forward = plan_update(scored(stage="mql"), {"lifecyclestage": "lead"}, {}, HS_NATIVE)[0]
    assert forward.fields["lifecyclestage"] == "marketingqualifiedlead" and forward.clear_first == []


def test_native_stage_never_leaves_a_sales_owned_value_or_a_reps_status_whatever_the_store_says():
    # even when leadflow's record of its writes says it wrote the value (a store copied from an org
    # whose mapping once wrote it), a sales-owned stage and a status read as a rep's are sales's
    hs = plan_update(scored(stage="nurture"), {"lifecyclestage": "opportunity"}, {"lifecyclestage": "opportunity"},
                     HS_NATIVE)
    assert all("lifecyclestage" not in u.fields for u in hs)
    sf = plan_update(scored("salesforce", stage="mql"), {"Status": "Working - Contacted"},
                     {"Status": "Working - Contacted"}, SF_NATIVE)
    assert all("Status" not in u.fields for u in sf)


def test_native_stage_is_not_written_with_the_switch_off_or_for_a_stage_without_a_value():
    assert all("lifecyclestage" not in u.fields for u in plan_update(scored(), {"lifecyclestage": "lead"}, {}, HS))
    patient = plan_update(scored("salesforce", stage="intake_ready"), {"Status": "Open - Not Contacted"}, {}, SF_NATIVE)
    assert all("Status" not in u.fields for u in patient)
