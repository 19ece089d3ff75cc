"""The B2B criteria: fit, need, authority, budget, timeline, compliance readiness.

Each criterion returns ``(score 0-100, reasons)``; a reason is ``(impact, sentence)`` where the
impact (signed, in criterion points) ranks it among the top positive and negative reasons.
Unknown is never silently zero: it scores in between and says what to ask or enrich.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from re import Pattern

from leadflow.canonical import Lead
from scoring.model import QualificationModel, SegmentRules, normalize_country

Reason = tuple[float, str]
Reasons = Sequence[Reason]  # a tuple when cached and shared between leads: never mutate it

_CONTENT_EVENTS = frozenset({"solution_page_view", "implementation_page_view", "content_download"})
_SIZE_NOUNS = {"bed_count": "beds", "provider_count": "providers", "location_count": "locations",
               "employee_count": "employees", "annual_revenue": "annual revenue"}
KIND_WORDS = {
    "general_acute": "general acute care hospital", "critical_access": "critical access hospital",
    "rural_acute": "rural acute care hospital", "rural_emergency": "rural emergency hospital",
    "psychiatric": "psychiatric hospital", "childrens": "children's hospital",
    "long_term_care": "long-term care hospital", "rehabilitation": "rehabilitation hospital",
    "federal_va": "VA (federal) facility", "federal_dod": "military (DoD) facility", "other": "other kind of organization",
}
_FIT_NEUTRAL = 0.6  # a component fraction above this is a positive reason, below a negative one


@dataclass(slots=True)
class OrgContext:
    """What the batch knows about one organization's contacts (the buying group)."""

    functions: set[str] = field(default_factory=set)
    has_decision_maker: bool = False


def clamp(score: float) -> int:
    """Round to an int in 0-100."""
    return 0 if score <= 0 else 100 if score >= 100 else int(score + 0.5)


# --- disqualifiers (every B2B segment) ------------------------------------------------------


def _domains(lead: Lead) -> tuple[str, ...]:
    domains = []
    if lead.company_domain:
        domains.append(lead.company_domain.strip().lower().removeprefix("www."))
    if lead.email and "@" in lead.email:
        domains.append(lead.email.rsplit("@", 1)[1].strip().lower())
    return tuple(domains)


def disqualifiers(lead: Lead, model: QualificationModel) -> list[str]:
    """Why this lead is outside every profile (student, vendor, competitor), or an empty list."""
    found: list[str] = []
    if lead.job_title:
        found += _title_disqualifiers(lead.job_title, model.title_disqualifiers, model.vendor_titles)
    for domain in _domains(lead):
        if domain in model.competitor_domains:
            found.append("competitor domain")
            break
        if domain in model.vendor_domains:
            found.append("vendor domain, not a buyer")
            break
    return found


@lru_cache(maxsize=4096)
def _title_disqualifiers(title: str, students: Pattern[str] | None, vendors: Pattern[str] | None) -> tuple[str, ...]:
    text = title.lower()
    found = []
    if students and students.search(text):
        found.append("title indicates a student or trainee, not a buyer")
    if vendors and vendors.search(text):
        found.append("title indicates a vendor, not a buyer")
    return tuple(found)


# --- fit ------------------------------------------------------------------------------------

Component = tuple[float, str | None, str | None]  # (fraction 0-1, reason, disqualifier)


def _org_type(lead: Lead, seg: SegmentRules, model: QualificationModel) -> Component:
    if seg.name == "unknown":
        return 0.3, "organization type unknown: enrich or ask", None
    kind = lead.org_kind._value_ if lead.org_kind is not None else None
    if kind is None or not (seg.kinds_ideal or seg.kinds_acceptable or seg.kinds_excluded):
        return 1.0, _fits_text(seg.label), None
    return _kind_component(kind, seg.label, seg.kinds_ideal, seg.kinds_acceptable, seg.kinds_excluded)


@lru_cache(maxsize=64)
def _fits_text(label: str) -> str:
    return f"organization type fits: {label}"


@lru_cache(maxsize=256)
def _kind_component(kind: str, label: str, ideal: frozenset[str], acceptable: frozenset[str],
                    excluded: frozenset[str]) -> Component:
    """The segment profile's ``org_kinds`` rule for the organization's kind (critical access, psychiatric, ...)."""
    words = KIND_WORDS.get(kind, kind)
    if kind in excluded:
        return 0.0, f"{words}: outside the {label} profile", f"{words} outside the profile"
    if kind in ideal:
        return 1.0, f"organization type fits: {label} ({words})", None
    if kind in acceptable:
        return 0.7, f"{words}: acceptable for the {label} profile, not ideal", None
    return 0.4, f"{words}: not in the {label} profile", None


def _specialty(lead: Lead, seg: SegmentRules, model: QualificationModel) -> Component:
    return _specialty_of(lead.specialty, model.excluded_specialties, seg.specialty_excluded, seg.specialty_ideal)


@lru_cache(maxsize=4096)
def _specialty_of(
    specialty: str | None, excluded_everywhere: Pattern[str] | None, excluded: Pattern[str] | None,
    ideal: Pattern[str] | None,
) -> Component:
    text = specialty.lower() if specialty else ""
    if text and any(pattern and pattern.search(text) for pattern in (excluded_everywhere, excluded)):
        return 0.0, "specialty outside the profile", "specialty outside the profile"
    if ideal is None:
        return 1.0, None, None
    if not text:
        return 0.5, "specialty unknown: enrich from NPI", None
    if ideal.search(text):
        return 1.0, "specialty in the ideal profile", None
    return 0.5, "specialty not in the ideal list", None


def _care_setting(lead: Lead, seg: SegmentRules, model: QualificationModel) -> Component:
    if not (seg.settings_ideal or seg.settings_acceptable or seg.settings_excluded):
        return 1.0, None, None
    if lead.care_setting is None:
        return 0.5, "care setting unknown: enrich", None
    setting = lead.care_setting._value_
    if setting in seg.settings_excluded:
        return 0.0, f"care setting outside the profile ({setting})", "care setting outside the profile"
    if setting in seg.settings_ideal:
        return 1.0, f"care setting fits ({setting})", None
    if setting in seg.settings_acceptable:
        return 0.7, None, None
    return 0.3, "care setting not in the profile", None


def _size(lead: Lead, seg: SegmentRules, model: QualificationModel) -> Component:
    if not seg.size_rules and not seg.fallback_size_rules:
        return 1.0, None, None
    best = _best_size(lead, seg.size_rules)
    if best is None and seg.fallback_size_rules:
        fallback = _best_size(lead, seg.fallback_size_rules)
        if fallback is not None:
            nouns = "/".join(_SIZE_NOUNS[r[0]] for r in seg.size_rules) or "count"
            best = (fallback[0], f"{fallback[1][:-1]}; no {nouns} known)")
    if best is None:
        rules = seg.size_rules or seg.fallback_size_rules
        return 0.5, "size unknown: enrich " + "/".join(_SIZE_NOUNS[r[0]] for r in rules), None
    return best[0], best[1], None


def _best_size(lead: Lead, rules: tuple[tuple[str, int, int], ...]) -> tuple[float, str] | None:
    best: tuple[float, str] | None = None
    for name, minimum, ideal in rules:
        value = getattr(lead, name)
        if value is None:
            continue
        shown = _size_value(name, value)
        if value >= ideal:
            candidate = (1.0, f"size fits the ideal profile ({shown})")
        elif value >= minimum:
            candidate = (0.7, f"size within the profile ({shown})")
        else:
            candidate = (0.2, f"smaller than the profile ({shown})")
        if best is None or candidate[0] > best[0]:
            best = candidate
    return best


def _size_value(name: str, value: float) -> str:
    if name == "annual_revenue":
        return f"${value / 1e6:,.0f}M {_SIZE_NOUNS[name]}" if value >= 1e6 else f"${value:,.0f} {_SIZE_NOUNS[name]}"
    return f"{value:,} {_SIZE_NOUNS[name]}" if name == "employee_count" else f"{value} {_SIZE_NOUNS[name]}"


def _geography(lead: Lead, seg: SegmentRules, model: QualificationModel) -> Component:
    return _geography_of(lead.country, lead.state, seg.countries, seg.states, seg.excluded_states)


@lru_cache(maxsize=4096)
def _geography_of(
    country_text: str | None, state_text: str | None, countries: frozenset[str], states: frozenset[str],
    excluded_states: frozenset[str],
) -> Component:
    country = normalize_country(country_text) if country_text else None
    state = state_text.strip().upper() if state_text else None
    if country and countries and country not in countries:
        return 0.0, "outside the countries served", "outside the geography served"
    if state and country in (None, "US"):
        if state in excluded_states or (states and state not in states):
            return 0.0, "outside the states served", "outside the geography served"
    if not country and not state:
        return 0.5, "geography unknown: enrich state/country", None
    return 1.0, "in the geography served", None


def _ehr(lead: Lead, seg: SegmentRules, model: QualificationModel) -> Component:
    if seg.ehr_ideal is None and seg.ehr_supported is None:
        return 1.0, None, None
    return _ehr_of(lead.ehr_vendor, seg.ehr_ideal, seg.ehr_supported)


@lru_cache(maxsize=4096)
def _ehr_of(ehr_vendor: str | None, ideal: Pattern[str] | None, supported: Pattern[str] | None) -> Component:
    vendor = ehr_vendor.lower() if ehr_vendor else ""
    if not vendor:
        return 0.5, "EHR unknown: ask", None
    if ideal and ideal.search(vendor):
        return 1.0, "EHR has a ready integration", None
    if supported and supported.search(vendor):
        return 0.75, "EHR is supported", None
    return 0.35, "EHR not integrated yet", None


_COMPONENTS = {
    "org_type": _org_type,
    "specialty": _specialty,
    "care_setting": _care_setting,
    "size": _size,
    "geography": _geography,
    "ehr": _ehr,
}


def fit(lead: Lead, seg: SegmentRules, model: QualificationModel) -> tuple[int, list[Reason], list[str]]:
    """Fit against the segment's ideal profile; also returns profile disqualifiers."""
    total, reasons, excluded = 0.0, [], []
    for name, share in model.fit_components:
        fraction, reason, disqualifier = _COMPONENTS[name](lead, seg, model)
        total += fraction * share
        if reason:
            reasons.append(((fraction - _FIT_NEUTRAL) * share * 100, reason))
        if disqualifier:
            excluded.append(disqualifier)
    return clamp(total * 100), reasons, excluded


# --- need -----------------------------------------------------------------------------------


def content_engaged(lead: Lead) -> int:
    return sum(1 for event in lead.events if event.type._value_ in _CONTENT_EVENTS)


def need(lead: Lead, seg: SegmentRules, model: QualificationModel) -> tuple[int, list[Reason]]:
    if lead.discovery.need_confirmed:
        return 100, [(40.0, "need confirmed on discovery")]
    reasons: list[Reason] = []
    base = _stated_need(lead.pain_point, seg, model, reasons)
    content = content_engaged(lead)
    if content:
        reasons.append((min(30, 10 * content), f"engaged with solution content ({content} views/downloads)"))
    else:
        reasons.append((-5.0, "no solution content engaged yet"))
    return clamp(base + min(30, 10 * content)), reasons


def _stated_need(pain: str | None, seg: SegmentRules, model: QualificationModel, reasons: list[Reason]) -> float:
    if not pain or not pain.strip():
        reasons.append((-20.0, "pain point not stated: ask on discovery"))
        return 20.0
    matched = model.match_needs(pain.lower())
    if not matched:
        reasons.append((-10.0, "stated pain point matches no known need"))
        return 30.0
    priority = [name for name in matched if name in seg.priority_needs]
    if priority:
        reasons.append((30.0, f"stated need is a priority for this segment: {model.need_labels[priority[0]]}"))
        return 70.0
    reasons.append((15.0, f"stated need: {model.need_labels[matched[0]]}"))
    return 50.0


# --- authority ------------------------------------------------------------------------------

_ROLE_REASONS = {
    "decision_maker": "decision maker by title",
    "influencer": "influencer by title",
    "user": "end user by title: find the decision maker",
    "unknown": "role unknown: ask who decides",
}


def authority(lead: Lead, org: OrgContext, model: QualificationModel) -> tuple[int, Reasons]:
    """Role from the title plus buying-group coverage across the organization's contacts."""
    if lead.discovery.authority_confirmed:
        return _AUTHORITY_CONFIRMED
    role = lead.decision_role._value_
    covered = tuple(f for f in model.buying_group if f in org.functions)
    return _authority(role, model.role_scale[role], org.has_decision_maker, covered, model.buying_group)


_AUTHORITY_CONFIRMED: tuple[int, Reasons] = (100, ((40.0, "authority confirmed on discovery"),))


@lru_cache(maxsize=1024)
def _authority(
    role: str, role_score: float, org_has_decision_maker: bool, covered: tuple[str, ...], group: tuple[str, ...]
) -> tuple[int, Reasons]:
    role_points = role_score * 0.7
    reasons: list[Reason] = [(role_points - 35.0, _ROLE_REASONS[role])]
    if role != "decision_maker" and org_has_decision_maker:
        role_points = max(role_points, 60.0)
        reasons.append((15.0, "a decision maker at the organization is engaged"))
    coverage_points = 30.0 * len(covered) / len(group) if group else 30.0
    if covered:
        reasons.append((coverage_points, f"buying group covers {', '.join(covered)} ({len(covered)} of {len(group)})"))
    missing = [f for f in group if f not in covered]
    if missing:
        reasons.append((-2.0 * len(missing), f"no {', '.join(missing)} contact yet"))
    return clamp(role_points + coverage_points), tuple(reasons)


# --- budget, timeline -----------------------------------------------------------------------

_BUDGET_REASONS = {
    "approved": "budget approved",
    "planned": "budget planned in the current cycle",
    "needs_approval": "budget needs approval (board)",
    "grant": "budget depends on a grant",
    "none": "no budget",
    "unknown": "budget unknown: ask on discovery",
}
_TIMELINE_REASONS = {
    "now": "buying now",
    "quarter": "buying this quarter",
    "half_year": "buying within six months",
    "year": "buying within a year",
    "later": "timeline more than a year out",
    "unknown": "timeline unknown: ask on discovery",
}


def budget(lead: Lead, model: QualificationModel) -> tuple[int, Reasons]:
    status = lead.budget_status._value_
    return _budget(status, model.budget_scale[status], lead.discovery.budget_path_known)


@lru_cache(maxsize=256)
def _budget(status: str, score: float, path_known: bool) -> tuple[int, Reasons]:
    if path_known:
        reasons: list[Reason] = [(30.0, "budget path known from discovery")]
        if status != "unknown":
            reasons.append((score - 50.0, _BUDGET_REASONS[status]))
        return clamp(max(score, 80.0)), tuple(reasons)
    return clamp(score), ((score - 50.0, _BUDGET_REASONS[status]),)


def timeline(lead: Lead, model: QualificationModel) -> tuple[int, Reasons]:
    value = lead.timeline._value_
    return _timeline(value, model.timeline_scale[value], lead.discovery.timeline_confirmed)


@lru_cache(maxsize=256)
def _timeline(value: str, score: float, confirmed: bool) -> tuple[int, Reasons]:
    reasons: list[Reason] = [(score - 50.0, _TIMELINE_REASONS[value])]
    if confirmed and value != "unknown":
        reasons.append((10.0, "timeline confirmed on discovery"))
    return clamp(score), tuple(reasons)


# --- compliance readiness -------------------------------------------------------------------

_READINESS_WORDS = {"ready": "done", "in_progress": "in progress", "not_started": "not started", "unknown": "unknown: ask"}
_READINESS_LABELS = ("security review", "BAA", "privacy/legal review", "implementation staffing")
_READINESS_TEXTS = {
    (label, value): f"{label} {words}" for label in _READINESS_LABELS for value, words in _READINESS_WORDS.items()
}
_READINESS_SHARE = {"security review": 0.3, "BAA": 0.3, "privacy/legal review": 0.2, "implementation staffing": 0.2}
_LEGAL_CONTACT_FLOOR = 75.0


def compliance(lead: Lead, org: OrgContext, model: QualificationModel) -> tuple[int, Reasons]:
    """Security review, BAA, privacy/legal review (or a privacy/legal contact engaged), implementation staffing."""
    values = (lead.security_review._value_, lead.baa_status._value_, lead.privacy_review._value_,
              lead.implementation_staffing._value_)
    return _compliance(values, tuple(model.readiness_scale[v] for v in values), "compliance" in org.functions)


@lru_cache(maxsize=1024)
def _compliance(values: tuple[str, ...], points: tuple[float, ...], legal_contact: bool) -> tuple[int, Reasons]:
    reasons: list[Reason] = []
    score = 0.0
    for label, value, value_points in zip(_READINESS_LABELS, values, points):
        text = _READINESS_TEXTS[label, value]
        if label == "privacy/legal review" and legal_contact and value_points < _LEGAL_CONTACT_FLOOR:
            value_points, text = _LEGAL_CONTACT_FLOOR, "privacy/legal contact engaged"
        share = _READINESS_SHARE[label]
        score += share * value_points
        reasons.append(((value_points - 50.0) * share, text))
    return clamp(score), tuple(reasons)
