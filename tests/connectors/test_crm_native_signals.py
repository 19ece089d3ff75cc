"""CRM-native signals and outcomes through the real client libraries against the sandbox: sources
as the CRMs keep them, engagement from the CRMs' own activity objects (each an event at its own
time, with its origin), outcomes stored per lead, and the mapping-only switch to custom date fields."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from crm_harness import calls, fast_retry, org_create, sandbox_state

from connectors.crm.factory import connector_for_sandbox
from state.outcomes import StageMove, funnel, record_stage_moves
from leadflow.canonical import Lead, Source
from mappings import MAPPINGS_DIR, MappingError, load_mapping, parse_mapping
from sandbox.store import iso_z, now_ms
from scoring import load_model
from scoring.engagement import engagement

DAY = 86_400_000


def _window(conn: Any) -> list[Lead]:
    since = datetime.now(timezone.utc) - timedelta(days=1)
    until = datetime.now(timezone.utc) + timedelta(seconds=2)
    return [lead for page in conn.iter_pages(since, until) for lead in page.leads]


def _by_id(leads: list[Lead]) -> dict[str, Lead]:
    return {lead.crm_id: lead for lead in leads}


def _fields_mapping(crm: str, tmp_path: Path) -> Path:
    """The shipped mapping with ``signals: fields``: the only edit revops makes to switch."""
    raw = yaml.safe_load((MAPPINGS_DIR / f"{crm}.yaml").read_text())
    raw["signals"] = "fields"
    path = tmp_path / f"{crm}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _engagement(lead: Lead) -> int:
    return engagement(lead, datetime.now(timezone.utc), load_model())[0]


# ------------------------------------------------------------------------------------------ HubSpot


def _contact(portal: Any, props: dict[str, Any]) -> str:
    contact_id = portal.next_id("contacts")
    stamp = now_ms()
    base = {"email": f"c{contact_id}@mercy.example", "firstname": "Pat", "lastname": "Lee", "jobtitle": "CIO"}
    portal.tables["contacts"].insert(contact_id, {**base, **props}, stamp, stamp)
    return contact_id


def _hubspot_activity(client: Any, kind: str, contact_id: str, properties: dict[str, str]) -> str:
    """A call or meeting logged through hubspot-api-client, associated with the contact."""
    type_id = {"calls": 194, "meetings": 200, "deals": 3}[kind]
    body = {"properties": properties, "associations": [{"to": {"id": contact_id}, "types": [
        {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": type_id}]}]}
    api = client.crm.deals.basic_api if kind == "deals" else getattr(client.crm.objects, kind).basic_api
    return api.create(body).id


@pytest.fixture()
def hubspot_leads(sandbox, engine):
    """Contacts whose only engagement is one native record each, read by the connector."""
    portal = sandbox_state(sandbox).hubspot
    client = sandbox.hubspot_client()
    two_days_ago = iso_z(now_ms() - 2 * DAY)
    ids = {
        "nothing": _contact(portal, {"hs_analytics_source": "DIRECT_TRAFFIC"}),
        "call": _contact(portal, {"hs_analytics_source": "PAID_SEARCH", "hs_analytics_source_data_1": "google",
                                  "hs_analytics_source_data_2": "ehr scheduling"}),
        "meeting": _contact(portal, {}),
        "form": _contact(portal, {"first_conversion_date": now_ms() - 9 * DAY,
                                  "first_conversion_event_name": "Contact us",
                                  "recent_conversion_date": now_ms() - 2 * DAY,
                                  "recent_conversion_event_name": "Demo request - scheduling"}),
        "won": _contact(portal, {"lifecyclestage": "customer", "hs_lead_status": "CONNECTED",
                                 "hs_lifecyclestage_lead_date": now_ms() - 90 * DAY,
                                 "hs_lifecyclestage_opportunity_date": now_ms() - 40 * DAY,
                                 "hs_lifecyclestage_customer_date": now_ms() - 5 * DAY}),
    }
    records = {
        "call": _hubspot_activity(client, "calls", ids["call"], {"hs_timestamp": two_days_ago,
                                                                 "hs_call_status": "COMPLETED"}),
        "no_answer": _hubspot_activity(client, "calls", ids["call"], {"hs_timestamp": two_days_ago,
                                                                      "hs_call_status": "NO_ANSWER"}),
        "meeting": _hubspot_activity(client, "meetings", ids["meeting"], {
            "hs_timestamp": two_days_ago, "hs_meeting_start_time": two_days_ago, "hs_meeting_outcome": "COMPLETED"}),
        "no_show": _hubspot_activity(client, "meetings", ids["meeting"], {
            "hs_timestamp": two_days_ago, "hs_meeting_start_time": two_days_ago, "hs_meeting_outcome": "NO_SHOW"}),
        "deal": _hubspot_activity(client, "deals", ids["won"], {
            "dealname": "Mercy scheduling", "dealstage": "closedwon", "amount": "120000",
            "closedate": iso_z(now_ms() - 5 * DAY), "pipeline": "default"}),
    }
    conn = connector_for_sandbox(sandbox, "hubspot", engine, retry=fast_retry())
    sandbox.reset_stats()
    return ids, records, conn, _by_id(_window(conn))


def test_hubspot_native_records_become_events_with_their_origin(hubspot_leads):
    ids, records, _conn, leads = hubspot_leads
    call = leads[ids["call"]]
    assert [(e.type.value, e.origin) for e in call.events] == [("call_completed", f"hubspot calls {records['call']}")]
    meeting = leads[ids["meeting"]]
    assert [(e.type.value, e.origin) for e in meeting.events] == [
        ("meeting_held", f"hubspot meetings {records['meeting']}")]  # the no-show is not engagement
    form = leads[ids["form"]]
    assert sorted((e.type.value, e.origin) for e in form.events) == [
        ("demo_request", "hubspot contacts.recent_conversion_date"),
        ("form_fill", "hubspot contacts.first_conversion_date"),
        ("form_fill", "hubspot contacts.recent_conversion_date")]
    assert {e.at.date() for e in form.events} == {(datetime.now(timezone.utc) - timedelta(days=d)).date() for d in (2, 9)}
    nothing = leads[ids["nothing"]]
    assert nothing.events == []
    for name in ("call", "meeting", "form"):
        assert _engagement(leads[ids[name]]) > _engagement(nothing) + 10, name


def test_hubspot_original_source_and_its_drill_downs(hubspot_leads):
    ids, _records, _conn, leads = hubspot_leads
    call = leads[ids["call"]]
    assert call.source is Source.paid_search and call.source_detail == "google" and call.campaign == "ehr scheduling"
    assert leads[ids["nothing"]].source is Source.web_form  # DIRECT_TRAFFIC, per the mapping's value map
    assert leads[ids["meeting"]].source is Source.other and not leads[ids["meeting"]].warnings


def test_hubspot_won_deal_is_the_outcome_and_is_stored(hubspot_leads, engine):
    ids, records, _conn, leads = hubspot_leads
    outcome = leads[ids["won"]].outcome
    assert outcome.opportunity_id == records["deal"] and outcome.opportunity_won is True
    assert outcome.opportunity_closed is True and outcome.opportunity_amount == 120000
    assert outcome.opportunity_close_date == (datetime.now(timezone.utc) - timedelta(days=5)).date()
    assert outcome.lifecycle_stage == "customer" and outcome.became_customer_at is not None
    journey = funnel(engine, "hubspot")[ids["won"]]
    assert journey.furthest == "won" and journey.closed_at == outcome.opportunity_close_date
    assert set(journey.crm_stage_dates) == {"lead", "opportunity", "customer"}


def test_hubspot_native_reads_are_batched_and_only_for_contacted_contacts(hubspot_leads):
    _ids, _records, conn, leads = hubspot_leads
    used = calls_by_endpoint(conn)
    # one association read per object type for the page, one batch read of the records found;
    # the contacts nobody called, met or sold to cost nothing more
    assert used["associations.calls.batch_read"] == used["associations.meetings.batch_read"] == 1
    assert used["calls.batch_read"] == used["meetings.batch_read"] == 1
    assert used["associations.deals.batch_read"] == used["deals.batch_read"] == 1
    assert len(leads) == 5


def calls_by_endpoint(conn: Any) -> dict[str, int]:
    return conn.api_usage()["by_endpoint"]


def test_hubspot_page_without_contacted_contacts_makes_no_extra_call(sandbox, engine):
    portal = sandbox_state(sandbox).hubspot
    for _ in range(3):
        _contact(portal, {"hs_analytics_source": "ORGANIC_SEARCH"})
    conn = connector_for_sandbox(sandbox, "hubspot", engine, retry=fast_retry())
    assert len(_window(conn)) == 3
    assert not any(name.startswith("associations.") and name != "associations.batch_read"
                   for name in calls_by_endpoint(conn))


def test_hubspot_switch_to_custom_date_fields(sandbox, engine, tmp_path):
    portal = sandbox_state(sandbox).hubspot
    client = sandbox.hubspot_client()
    called = now_ms() - 3 * DAY
    contact = _contact(portal, {"last_call_completed_at": called, "hs_analytics_source": "REFERRALS"})
    _hubspot_activity(client, "calls", contact, {"hs_timestamp": iso_z(now_ms() - DAY), "hs_call_status": "COMPLETED"})
    native = _by_id(_window(connector_for_sandbox(sandbox, "hubspot", engine, retry=fast_retry())))[contact]
    assert [e.origin.split(" ")[1] for e in native.events] == ["calls"]
    mapping = load_mapping(_fields_mapping("hubspot", tmp_path))
    conn = connector_for_sandbox(sandbox, "hubspot", engine, retry=fast_retry(), mapping=mapping, mark_reads=False)
    fields = _by_id(_window(conn))[contact]
    assert [(e.type.value, e.origin, e.at) for e in fields.events] == [
        ("call_completed", "hubspot contacts.last_call_completed_at", datetime.fromisoformat(iso_z(called)))]
    assert not any(name.startswith("associations.calls") for name in calls_by_endpoint(conn))


# ------------------------------------------------------------------------------------------ Salesforce


@pytest.fixture()
def salesforce_leads(sandbox, engine):
    org = sandbox_state(sandbox).salesforce
    two_days_ago = now_ms() - 2 * DAY
    base = {"Company": "Mercy Health", "Title": "CIO", "Status": "Open - Not Contacted", "LeadSource": "Web"}
    lead = lambda **extra: org_create(org, "Lead", {"LastName": "Lee", **base, **extra})  # noqa: E731
    ids = {"nothing": lead(), "call": lead(LastActivityDate=date.today().isoformat()),
           "meeting": lead(LastActivityDate=date.today().isoformat()), "webinar": lead(LeadSource="Webinar")}
    records = {
        "call": org_create(org, "Task", {"WhoId": ids["call"], "Subject": "Call", "TaskSubtype": "Call",
                                         "Status": "Completed", "Priority": "Normal", "IsClosed": True,
                                         "CompletedDateTime": two_days_ago}),
        "open_call": org_create(org, "Task", {"WhoId": ids["call"], "Subject": "Call back", "TaskSubtype": "Call",
                                              "Status": "Not Started", "Priority": "Normal"}),
        "email": org_create(org, "Task", {"WhoId": ids["nothing"], "Subject": "Email", "TaskSubtype": "Email",
                                          "Status": "Completed", "Priority": "Normal", "CompletedDateTime": two_days_ago}),
        "meeting": org_create(org, "Event", {"WhoId": ids["meeting"], "Subject": "Intro", "StartDateTime": two_days_ago,
                                             "EndDateTime": two_days_ago + 1_800_000}),
        "next_week": org_create(org, "Event", {"WhoId": ids["meeting"], "Subject": "Demo",
                                               "StartDateTime": now_ms() + 7 * DAY}),
    }
    webinar = org_create(org, "Campaign", {"Name": "Webinar: Patient access", "Type": "Webinar"})
    mail = org_create(org, "Campaign", {"Name": "Q3 email", "Type": "Email"})
    responded = (datetime.now(timezone.utc) - timedelta(days=4)).date().isoformat()
    records["attended"] = org_create(org, "CampaignMember", {"CampaignId": webinar, "LeadId": ids["webinar"],
                                                             "Status": "Attended", "HasResponded": True,
                                                             "FirstRespondedDate": responded})
    org_create(org, "CampaignMember", {"CampaignId": mail, "LeadId": ids["webinar"], "Status": "Sent",
                                       "HasResponded": False})
    opportunity = org_create(org, "Opportunity", {"Name": "Mercy scheduling", "StageName": "Closed Won", "IsClosed": True,
                                                  "IsWon": True, "Amount": 85000.0, "CloseDate": "2026-10-15"})
    ids["converted"] = lead(IsConverted=True, ConvertedDate="2026-09-01", ConvertedOpportunityId=opportunity,
                            Status="Closed - Converted")
    records["opportunity"] = opportunity
    return ids, records


def test_salesforce_native_records_become_events_with_their_origin(sandbox, engine, salesforce_leads):
    ids, records = salesforce_leads
    conn = connector_for_sandbox(sandbox, "salesforce", engine, retry=fast_retry())
    sandbox.reset_stats()
    leads = _by_id(_window(conn))
    assert calls(sandbox, "salesforce.") == {"salesforce.query": 1}  # activities come as subqueries
    assert [(e.type.value, e.origin) for e in leads[ids["call"]].events] == [
        ("call_completed", f"salesforce Task {records['call']}")]
    assert [(e.type.value, e.origin) for e in leads[ids["meeting"]].events] == [
        ("meeting_held", f"salesforce Event {records['meeting']}")]  # next week's is not held yet
    webinar = leads[ids["webinar"]]
    assert [(e.type.value, e.origin) for e in webinar.events] == [
        ("webinar_attended", f"salesforce CampaignMember {records['attended']}")]
    assert webinar.events[0].at.date() == (datetime.now(timezone.utc) - timedelta(days=4)).date()
    assert webinar.source is Source.webinar and webinar.campaign == "Webinar: Patient access"
    assert leads[ids["nothing"]].events == []  # an email task is not a call
    for name in ("call", "meeting", "webinar"):
        assert _engagement(leads[ids[name]]) > _engagement(leads[ids["nothing"]]) + 5, name


def test_salesforce_converted_lead_and_its_won_opportunity(sandbox, engine, salesforce_leads):
    ids, records = salesforce_leads
    conn = connector_for_sandbox(sandbox, "salesforce", engine, retry=fast_retry())
    leads = _by_id(_window(conn))
    outcome = leads[ids["converted"]].outcome
    assert outcome.converted is True and outcome.converted_at.date() == date(2026, 9, 1)
    assert outcome.opportunity_id == records["opportunity"] and outcome.opportunity_stage == "Closed Won"
    assert outcome.opportunity_won is True and outcome.opportunity_amount == 85000
    assert outcome.opportunity_close_date == date(2026, 10, 15) and outcome.lead_status == "Closed - Converted"
    assert leads[ids["nothing"]].outcome.converted is False and leads[ids["nothing"]].outcome.opportunity_id is None
    journeys = funnel(engine, "salesforce")
    assert journeys[ids["converted"]].furthest == "won"
    assert journeys[ids["nothing"]].lead_status == "Open - Not Contacted"


def test_salesforce_bulk_window_reads_the_same_activities(sandbox, engine, salesforce_leads):
    ids, records = salesforce_leads
    rest = _by_id(_window(connector_for_sandbox(sandbox, "salesforce", engine, retry=fast_retry(),
                                                mark_reads=False)))
    bulk_conn = connector_for_sandbox(sandbox, "salesforce", engine, retry=fast_retry(), mark_reads=False,
                                      bulk_threshold=1, bulk_poll_interval=0.001)
    org = sandbox_state(sandbox).salesforce
    for _ in range(2_000):  # a window above one REST batch: the rest comes by Bulk API 2.0
        org_create(org, "Lead", {"LastName": "Filler", "Company": "Filler Clinic", "Status": "Open - Not Contacted"})
    for name in ("call", "meeting", "webinar"):  # bump ours past the fillers: they land in the bulk job
        org.tables["Lead"].touch(ids[name], now_ms() + 1_000)
    sandbox.reset_stats()
    sent: list[str] = []
    child_rows = bulk_conn._child_rows
    bulk_conn._child_rows = lambda child, lead_ids=None, leads=None: (
        sent.append(child.by_semi_join(leads) if leads else child.by_leads(lead_ids)), child_rows(child, lead_ids, leads))[1]
    bulk = _by_id(_window(bulk_conn))
    assert "salesforce.bulk2.query_create" in calls(sandbox, "salesforce.")
    semi = [q for q in sent if "FROM CampaignMember" in q]
    assert len(semi) == 1 and "LeadId IN (SELECT Id FROM Lead WHERE SystemModstamp >= " in semi[0]
    assert sum("FROM Task" in q for q in sent) == 1  # the one bulk lead with a LastActivityDate and a call
    for name in ("call", "meeting", "webinar"):
        assert [(e.type, e.origin) for e in bulk[ids[name]].events] == \
            [(e.type, e.origin) for e in rest[ids[name]].events], name


def test_salesforce_switch_to_custom_date_fields(sandbox, engine, tmp_path, salesforce_leads):
    ids, records = salesforce_leads
    org = sandbox_state(sandbox).salesforce
    org.tables["Lead"].update(ids["call"], {"Last_Call_At__c": now_ms() - 6 * DAY}, now_ms())
    mapping = load_mapping(_fields_mapping("salesforce", tmp_path))
    conn = connector_for_sandbox(sandbox, "salesforce", engine, retry=fast_retry(), mapping=mapping,
                                 mark_reads=False)
    assert "(SELECT" not in conn.window_soql(None, None)
    leads = _by_id(_window(conn))
    assert [(e.type.value, e.origin) for e in leads[ids["call"]].events] == [
        ("call_completed", "salesforce Lead.Last_Call_At__c")]
    assert leads[ids["meeting"]].events == [] and leads[ids["webinar"]].events == []
    native = _by_id(_window(connector_for_sandbox(sandbox, "salesforce", engine, retry=fast_retry(),
                                                  mark_reads=False)))
    assert [e.origin for e in native[ids["call"]].events] == [f"salesforce Task {records['call']}"]


# ------------------------------------------------------------------------------------------ state


def test_stage_history_and_outcomes_make_one_journey(engine):
    start = datetime(2026, 9, 1, tzinfo=timezone.utc)
    record_stage_moves(engine, "salesforce", [StageMove("00Q1", "inquiry", None)], start, "run-1")
    record_stage_moves(engine, "salesforce", [StageMove("00Q1", "mql", "inquiry")], start + timedelta(days=3), "run-2")
    record_stage_moves(engine, "salesforce", [StageMove("00Q1", "sql", "mql")], start + timedelta(days=9), "run-3")
    journey = funnel(engine, "salesforce")["00Q1"]
    assert list(journey.stages) == ["inquiry", "mql", "sql"]
    assert journey.stages["mql"] == start + timedelta(days=3) and journey.furthest == "sql"


# ------------------------------------------------------------------------------------------ mapping, explain


def test_one_form_submission_is_one_form_fill():
    from connectors.crm.convert import record_to_lead

    props = {"lastmodifieddate": "2026-11-02T00:00:00Z", "num_conversion_events": "1",
             "first_conversion_date": "2026-11-01T10:00:00Z", "first_conversion_event_name": "Ebook: EHR guide",
             "recent_conversion_date": "2026-11-01T10:00:00Z", "recent_conversion_event_name": "Ebook: EHR guide"}
    lead = record_to_lead(load_mapping("hubspot"), "42", props)
    assert sorted(e.type.value for e in lead.events) == ["content_download", "form_fill"]


def test_a_native_activity_with_an_unknown_event_names_the_key():
    raw = yaml.safe_load((MAPPINGS_DIR / "hubspot.yaml").read_text())
    raw["native"]["activities"][1]["event"] = "meeting_booked"
    with pytest.raises(MappingError) as err:
        parse_mapping(raw, "hubspot.yaml")
    assert err.value.key == "native.activities.1.event" and "meeting_booked" in err.value.problem


def test_a_key_given_twice_is_an_error_not_a_silent_switch(tmp_path):
    text = (MAPPINGS_DIR / "salesforce.yaml").read_text().replace("signals: native", "signals: native\nsignals: fields")
    path = tmp_path / "salesforce.yaml"
    path.write_text(text)
    with pytest.raises(MappingError) as err:
        load_mapping(path)
    assert err.value.key == "(yaml)" and "duplicate key 'signals'" in err.value.problem


def test_explain_shows_where_each_event_came_from(tmp_path, capsys):
    from scoring.cli_explain import run_explain

    lead = {"crm": "salesforce", "crm_id": "00Q1", "company_name": "Mercy Health", "job_title": "CIO",
            "events": [{"type": "call_completed", "at": "2026-11-20T15:00:00Z", "origin": "salesforce Task 00T5g01"},
                       {"type": "webinar_attended", "at": "2026-11-10T00:00:00Z",
                        "origin": "salesforce CampaignMember 00v5g01"},
                       {"type": "form_fill", "at": "2026-11-01T00:00:00Z"}]}
    path = tmp_path / "lead.json"
    path.write_text(json.dumps(lead))
    assert run_explain(path, "2026-11-27T12:00:00Z", None, as_json=True) == 0
    events = json.loads(capsys.readouterr().out)[0]["events"]
    assert [(e["type"], e["from"]) for e in events] == [
        ("call_completed", "salesforce Task 00T5g01"), ("webinar_attended", "salesforce CampaignMember 00v5g01"),
        ("form_fill", "(not recorded)")]
    assert run_explain(path, "2026-11-27T12:00:00Z", None, as_json=False) == 0
    text = capsys.readouterr().out
    assert "salesforce Task 00T5g01" in text and "salesforce CampaignMember 00v5g01" in text


def test_outcomes_round_trip_on_sqlite_and_postgresql(database_url):
    from state.outcomes import record_outcomes
    from state.schema import make_engine

    engine = make_engine(database_url)
    won = Lead(crm="hubspot", crm_id="7", outcome={
        "lifecycle_stage": "customer", "became_mql_at": "2026-09-01T00:00:00Z", "converted": True,
        "opportunity_id": "30000001", "opportunity_won": True, "opportunity_closed": True,
        "opportunity_amount": 120000.5, "opportunity_close_date": "2026-11-01"})
    assert record_outcomes(engine, "hubspot", [won, Lead(crm="hubspot", crm_id="8")]) == 1
    assert record_outcomes(engine, "hubspot", [won.model_copy(update={"outcome": won.outcome.model_copy(
        update={"opportunity_amount": 99000.0})})]) == 1  # upserted, not duplicated
    journey = funnel(engine, "hubspot")["7"]
    assert journey.furthest == "won" and journey.amount == 99000.0 and journey.closed_at == date(2026, 11, 1)
    assert journey.crm_stage_dates == {"mql": "2026-09-01T00:00:00+00:00"} and list(funnel(engine, "hubspot")) == ["7"]
    engine.dispose()
