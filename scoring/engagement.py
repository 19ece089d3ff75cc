"""Engagement: events decay with a half-life, each event type is capped, plus a source prior."""

from __future__ import annotations

import math
from datetime import datetime
from functools import lru_cache
from operator import itemgetter

from leadflow.canonical import Lead
from scoring.criteria import Reason, clamp
from scoring.model import QualificationModel

_LN2 = math.log(2.0)
_EVENT_WORDS = {
    "demo_request": "requested a demo",
    "call_completed": "completed a call",
    "meeting_held": "met with sales",
    "conference_attended": "visited us at a conference",
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


def decayed_points(lead: Lead, now: datetime, model: QualificationModel) -> tuple[dict[str, float], float]:
    """Per event type, the decayed points of its events, capped (future events count as fresh);
    and the age in days of the newest event (infinite when there is none)."""
    rate = _LN2 / (model.half_life_days * 86400.0)
    rules = model.event_rules
    totals: dict[str, float] = {}
    youngest = math.inf
    exp = math.exp
    for event in lead.events:
        kind = event.type._value_  # the plain string: faster than hashing the enum member
        rule = rules.get(kind)
        if rule is None:
            continue
        age = (now - event.at).total_seconds()
        if age < youngest:
            youngest = age
        points = rule[0] if age <= 0 else rule[0] * exp(-rate * age)
        totals[kind] = totals.get(kind, 0.0) + points
    capped = {kind: (points if points < rules[kind][1] else rules[kind][1]) for kind, points in totals.items()}
    return capped, youngest / 86400.0


@lru_cache(maxsize=64)
def _source_reason(source: str, prior: float) -> Reason | None:
    words = source.replace("_", " ")
    if prior >= _STRONG_PRIOR:
        return prior, f"came in by {words} (a strong source)"
    if prior <= 6:
        return prior - 10.0, f"came in by {words} (a weak source)"
    return None


@lru_cache(maxsize=64)
def _prior_only_text(source: str, prior: float) -> str:
    return f"no activity recorded: engagement is the source prior only ({source.replace('_', ' ')}, {prior:g})"


def engagement(lead: Lead, now: datetime, model: QualificationModel) -> tuple[int, list[Reason]]:
    """0-100: decayed, capped event points plus the lead source's prior."""
    points, newest_days = decayed_points(lead, now, model)
    prior = model.source_prior.get(lead.source._value_, 0.0)
    reasons: list[Reason] = []
    for kind, value in sorted(points.items(), key=itemgetter(1), reverse=True)[:3]:
        if value >= 1.0:
            reasons.append((value, _EVENT_WORDS.get(kind, kind.replace("_", " "))))
    source_reason = _source_reason(lead.source._value_, prior)
    if source_reason:
        reasons.append(source_reason)
    if not lead.events:
        reasons.append((-20.0, _prior_only_text(lead.source._value_, prior)))
    elif newest_days > 2 * model.half_life_days:
        reasons.append((-10.0, "engagement has faded: no recent activity"))
    return clamp(sum(points.values()) + prior), reasons
