"""The trusted read path (``convert.FAST_PATH``, ``leadflow.canonical.lead_from_parsed``) builds the
very Lead that ``Lead.model_validate`` builds, or falls back to it: generated records with odd
values, both CRMs, compared field by field (types included), with the fields set and the JSON form."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from connectors.crm import convert
from connectors.crm.base import Quarantined
from connectors.crm.convert import _compiled, convert_record
from leadflow.canonical import lead_from_parsed
from mappings import load_mapping

MAPPINGS = {"hubspot": load_mapping("hubspot"), "salesforce": load_mapping("salesforce")}
MAPPINGS["salesforce_fields"] = MAPPINGS["salesforce"].model_copy(update={"signals": "fields"})

ODD_TEXT = st.sampled_from(["", " ", "  padded  ", "ünïcödé", "0", "-1", "1e3", "3.7", "NaN", "inf", "true", "No",
                            "maybe", "2026-01-02T03:04:05Z", "1767225600000", "B2B", "Patient", "health system",
                            "HEALTH_SYSTEM", "demo-request", "x" * 300, "None", "null"])


def _value_for(fm: Any) -> st.SearchStrategy:
    """Values a CRM could send for a field of this mapping type, typical and odd."""
    typical: list[st.SearchStrategy] = [st.none(), ODD_TEXT, st.text(max_size=12)]
    if fm.type == "number":
        typical += [st.integers(-5, 10**12).map(str), st.integers(-5, 400), st.floats(allow_nan=True, allow_infinity=True),
                    st.floats(-10, 1000).map(repr), st.booleans()]
    elif fm.type == "bool":
        typical += [st.booleans(), st.sampled_from(["true", "false", "TRUE", "yes", "0", "1", "checked", "on"])]
    elif fm.type in ("datetime", "date"):
        typical += [st.integers(0, 2 * 10**12).map(str), st.integers(0, 2 * 10**12),
                    st.datetimes().map(lambda d: d.isoformat()), st.datetimes().map(lambda d: d.isoformat() + "Z"),
                    st.sampled_from(["2026-01-02", "2026-01-02T03:04:05.000+0000", "2026-13-40"])]
    if fm.values:
        typical.append(st.sampled_from([str(v) for v in fm.values.values()] + [str(k) for k in fm.values]))
    if fm.read_aliases:
        typical.append(st.sampled_from([str(k) for k in fm.read_aliases]))
    return st.one_of(*typical)


@st.composite
def records(draw: Any, crm: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    mapping = MAPPINGS[crm]
    props: dict[str, Any] = {}
    company: dict[str, Any] | None = {} if draw(st.booleans()) else None
    for _name, fm, field, on_company, _group, _leaf in _compiled(mapping)[3]:
        if draw(st.integers(0, 3)) == 0:
            continue  # absent
        target = company if on_company else props
        if target is not None:
            target[field] = draw(_value_for(fm))
    for field in (mapping.modified_field, *(em.field for em in mapping.property_events().values())):
        if draw(st.booleans()):
            props[field] = draw(st.one_of(st.none(), st.integers(0, 2 * 10**12).map(str), ODD_TEXT,
                                          st.datetimes().map(lambda d: d.isoformat() + "Z")))
    return props, company


def _both(crm: str, props: dict[str, Any], company: dict[str, Any] | None) -> tuple[Any, Any]:
    mapping = MAPPINGS[crm]
    try:
        convert.FAST_PATH = True
        fast = convert_record(mapping, "42", props, company, "9001" if company is not None else None)
        convert.FAST_PATH = False
        validated = convert_record(mapping, "42", props, company, "9001" if company is not None else None)
    finally:
        convert.FAST_PATH = True
    return fast, validated


def _same(fast: Any, validated: Any) -> None:
    if isinstance(validated, Quarantined):
        assert fast == validated
        return
    assert not isinstance(fast, Quarantined)
    assert repr(fast) == repr(validated)  # repr tells 3 from 3.0 and an enum from its value
    assert fast == validated
    assert fast.model_fields_set == validated.model_fields_set
    for name in ("discovery", "patient", "outcome"):
        part_fast, part_validated = getattr(fast, name), getattr(validated, name)
        assert (part_fast is None) == (part_validated is None)
        if part_validated is not None:
            assert part_fast.model_fields_set == part_validated.model_fields_set
    assert fast.model_dump(mode="json") == validated.model_dump(mode="json")
    assert [type(e) for e in fast.events] == [type(e) for e in validated.events]


@pytest.mark.parametrize("crm", sorted(MAPPINGS))
def test_the_fast_path_gives_the_validated_lead_on_generated_records(crm):
    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(record=records(crm))
    def check(record):
        _same(*_both(crm, *record))

    check()


def test_a_typical_record_takes_the_fast_path(monkeypatch):
    """What the CRMs send (HubSpot strings, company fields, visits, a conversion) needs no validation."""
    from leadflow.canonical import Lead

    props = {"email": "ann@example.org", "firstname": "Ann", "lastname": "Lee", "jobtitle": "CIO",
             "lastmodifieddate": "2026-01-02T03:04:05.678Z", "hs_analytics_source": "REFERRALS",
             "leadflow_lead_score": "42", "discovery_need_confirmed": "true", "zip": "02139",
             "hs_analytics_last_visit_timestamp": "1767225600000", "hs_analytics_num_visits": "17",
             "recent_conversion_date": "2026-01-01T00:00:00Z", "recent_conversion_event_name": "Demo request form"}
    company = {"name": "Mercy Health", "leadflow_org_type": "health_system", "leadflow_bed_count": "350.0"}
    validated = convert.record_to_lead(MAPPINGS["hubspot"], "101", props, company, "9001")

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("validated")

    monkeypatch.setattr(Lead, "model_validate", refuse)
    fast = convert.record_to_lead(MAPPINGS["hubspot"], "101", props, company, "9001")
    _same(fast, validated)


def test_a_value_that_needs_coercion_falls_back_to_validation():
    base = {"crm": "hubspot", "crm_id": "1"}
    assert lead_from_parsed(base) is not None
    assert lead_from_parsed({**base, "bed_count": -1}) is None  # a constraint: validation names it
    assert lead_from_parsed({**base, "bed_count": 3.0}) is None  # float for an int field
    assert lead_from_parsed({**base, "email": 5}) is None  # not a str
    assert lead_from_parsed({**base, "crm_id": ""}) is None
    assert lead_from_parsed({**base, "lead_kind": "PATIENT"}) is None  # enums: exact values only
    assert lead_from_parsed({**base, "unknown_field": 1}) is None
    assert lead_from_parsed({"crm": "hubspot"}) is None  # a required field missing
    from datetime import datetime

    assert lead_from_parsed({**base, "events": [{"type": "form_fill", "at": datetime(2026, 1, 1)}]}) is None  # naive
    lead = lead_from_parsed({**base, "annual_revenue": 5, "job_title": "Chief Information Officer"})
    assert repr(lead.annual_revenue) == "5.0" and lead.decision_role.value == "decision_maker"
