"""Stages by gates, not by score alone; the CRM's current stage is the previous stage.

inquiry -> mql (segment fit and engagement gates) -> sal (only when sales accepted in the CRM)
-> sql (need, authority and timeline confirmed on discovery, with a budget path known); nurture
(good fit, distant timeline or low engagement); disqualified (outside the profile).
A stage moves backwards only by an explicit rule of the model, never below what sales accepted,
and never over a stage sales set by hand.
"""

from __future__ import annotations

from typing import NamedTuple

from leadflow.canonical import Lead
from scoring.model import QualificationModel, SegmentRules

RANK = {"disqualified": 0, "inquiry": 1, "nurture": 1, "mql": 2, "sal": 3, "sql": 4}
_KNOWN_BUDGET_PATHS = frozenset({"approved", "planned", "needs_approval", "grant"})
_CONDITION_WORDS = {
    "disqualified": "now outside the profile",
    "timeline_distant": "timeline became distant",
    "fit_low": "fit fell below the nurture gate",
    "engagement_low": "engagement fell below the MQL gate",
}


class Signals(NamedTuple):
    """What the gates look at, computed by the engine."""

    fit: int
    engagement: int
    authority: int
    disqualifiers: tuple[str, ...]


def manual_stage_reason(lead: Lead) -> str | None:
    if lead.manual_stage is None:
        return None
    return f"stage {lead.manual_stage.value} set by hand by sales: leadflow keeps it"


def b2b_stage(lead: Lead, seg: SegmentRules, signals: Signals, model: QualificationModel) -> tuple[str, list[str]]:
    """(stage, stage reasons) for a B2B lead with no manual stage."""
    candidate, reasons = gate(lead, seg, signals)
    if lead.sales_accepted and RANK.get(candidate, 9) < RANK["sal"]:
        return _keep_accepted(lead, candidate, reasons)
    previous = lead.stage._value_ if lead.stage else None
    if previous == "sal" and not lead.sales_accepted:
        return candidate, [*reasons, "no longer sales accepted in the CRM"]
    if previous in RANK and candidate in RANK and RANK[candidate] < RANK[previous]:
        return _move_back(previous, candidate, reasons, _conditions(lead, seg, signals), model)
    return candidate, reasons


def gate(lead: Lead, seg: SegmentRules, signals: Signals) -> tuple[str, list[str]]:
    """The stage the gates give, ignoring the previous stage."""
    if signals.disqualifiers:
        return "disqualified", [f"disqualified: {signals.disqualifiers[0]}", *signals.disqualifiers[1:]]
    if lead.timeline._value_ in seg.distant_timelines:
        if signals.fit >= seg.nurture_fit:
            return "nurture", ["nurture: good fit but distant timeline; not handed to sales yet"]
        return "inquiry", _named(seg, f"inquiry: distant timeline and fit {signals.fit} below the nurture gate"
                                      f" ({seg.nurture_fit:g}) of the segment '{seg.label}'")
    missing = sql_missing(lead, seg, signals)
    if not missing:
        return "sql", ["SQL: discovery confirmed need, timeline and authority; budget path known"]
    if lead.sales_accepted:
        return "sal", ["SAL: accepted by sales", f"for SQL, confirm on discovery: {', '.join(missing)}"]
    return _marketing_gate(seg, signals, not lead.events)


def _marketing_gate(seg: SegmentRules, signals: Signals, prior_only: bool = False) -> tuple[str, list[str]]:
    """Each gate reason names the segment whose gate applies; an engagement that is only the
    source prior (no activity recorded) says so."""
    fit_ok = signals.fit >= seg.mql_fit
    engaged = signals.engagement >= seg.mql_engagement
    of = f"of the segment '{seg.label}'"
    engagement = f"engagement {signals.engagement}{' (the source prior only)' if prior_only else ''}"
    if fit_ok and engaged:
        return "mql", _named(seg, f"MQL: fit {signals.fit} >= {seg.mql_fit:g} and {engagement} >= {seg.mql_engagement:g},"
                                  f" the gates {of}")
    if signals.fit >= seg.nurture_fit:
        if not engaged:
            why = f"{engagement} below the MQL gate ({seg.mql_engagement:g}) {of}"
        else:
            why = f"fit {signals.fit} below the MQL gate ({seg.mql_fit:g}) {of}"
        return "nurture", _named(seg, f"nurture: good fit, {why}")
    return "inquiry", _named(seg, f"inquiry: fit {signals.fit} below the nurture gate ({seg.nurture_fit:g}) {of}")


def _named(seg: SegmentRules, reason: str) -> list[str]:
    """A gate reason that names the unknown segment keeps what to do about it next to it."""
    return [reason, _UNKNOWN_HINT] if seg.name == "unknown" else [reason]


_UNKNOWN_HINT = "organization type unknown: enrich or ask"


def sql_missing(lead: Lead, seg: SegmentRules, signals: Signals) -> list[str]:
    """What SQL still needs: need, authority (or a known decision process), timeline, budget path."""
    found = lead.discovery
    missing = []
    if not found.need_confirmed:
        missing.append("need")
    if not (found.authority_confirmed or signals.authority >= seg.sql_authority):
        missing.append("authority")
    if not found.timeline_confirmed or lead.timeline._value_ == "unknown":
        missing.append("timeline")
    if not (found.budget_path_known or lead.budget_status._value_ in _KNOWN_BUDGET_PATHS):
        missing.append("budget path")
    return missing


def _keep_accepted(lead: Lead, candidate: str, reasons: list[str]) -> tuple[str, list[str]]:
    previous = lead.stage.value if lead.stage else None
    kept = previous if previous in ("sal", "sql") else "sal"
    why = reasons[0] if reasons else candidate
    return kept, [f"{kept.upper()}: accepted by sales, leadflow does not demote it (model says {why})"]


def _conditions(lead: Lead, seg: SegmentRules, signals: Signals) -> dict[str, bool]:
    return {
        "disqualified": bool(signals.disqualifiers),
        "timeline_distant": lead.timeline._value_ in seg.distant_timelines,
        "fit_low": signals.fit < seg.nurture_fit,
        "engagement_low": signals.engagement < seg.mql_engagement,
    }


def _move_back(
    previous: str, candidate: str, reasons: list[str], conditions: dict[str, bool], model: QualificationModel
) -> tuple[str, list[str]]:
    for from_stages, to, condition in model.backward_rules:
        if previous in from_stages and to == candidate and conditions[condition]:
            return candidate, [f"moved back from {previous} to {candidate}: {_CONDITION_WORDS[condition]}", *reasons]
    return previous, [f"stays {previous}: no model rule moves it back to {candidate}"]
