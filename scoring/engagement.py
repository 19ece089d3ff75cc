"""Engagement: events decay with a half-life, each event type is capped, plus a source prior."""

from __future__ import annotations

import math
from datetime import datetime

from leadflow.canonical import Lead
from scoring.criteria import Reason, clamp
from scoring.model import QualificationModel

_LN2 = math.log(2.0)
_EVENT_WORDS = {
    "demo_request": "requested a demo",
    "call_completed": "completed a call",
    "pricing_page_view": "viewed pricing",
    "implementation_page_view": "viewed implementation pages",
    "solution_page_view": "viewed solution pages",
    "webinar_attended": "attended a webinar",
    "content_download": "downloaded content",
    "form_fill": "filled a form",
    "site_return_visit": "returned to the site",
    "email_click": "clicked an email",
}
_STRONG_PRIOR = 15.0


def decayed_points(lead: Lead, now: datetime, model: QualificationModel) -> dict[str, float]:
    """Per event type, the decayed points of its events, capped. Future events count as fresh."""
    rate = _LN2 / (model.half_life_days * 86400.0)
    rules = model.event_rules
    totals: dict[str, float] = {}
    for event in lead.events:
        kind = event.type._value_  # the plain string: faster than hashing the enum member
        rule = rules.get(kind)
        if rule is None:
            continue
        age = (now - event.at).total_seconds()
        points = rule[0] if age <= 0 else rule[0] * math.exp(-rate * age)
        totals[kind] = totals.get(kind, 0.0) + points
    return {kind: min(points, rules[kind][1]) for kind, points in totals.items()}


def _days_since_last(lead: Lead, now: datetime) -> float:
    return (now - max(event.at for event in lead.events)).total_seconds() / 86400.0


def engagement(lead: Lead, now: datetime, model: QualificationModel) -> tuple[int, list[Reason]]:
    """0-100: decayed, capped event points plus the lead source's prior."""
    points = decayed_points(lead, now, model)
    prior = model.source_prior.get(lead.source._value_, 0.0)
    reasons: list[Reason] = []
    for kind, value in sorted(points.items(), key=lambda item: -item[1])[:3]:
        if value >= 1.0:
            reasons.append((value, _EVENT_WORDS.get(kind, kind.replace("_", " "))))
    source = lead.source._value_.replace("_", " ")
    if prior >= _STRONG_PRIOR:
        reasons.append((prior, f"came in by {source} (a strong source)"))
    elif prior <= 6:
        reasons.append((prior - 10.0, f"came in by {source} (a weak source)"))
    if not lead.events:
        reasons.append((-20.0, "no engagement recorded"))
    elif _days_since_last(lead, now) > 2 * model.half_life_days:
        reasons.append((-10.0, "engagement has faded: no recent activity"))
    return clamp(sum(points.values()) + prior), reasons
