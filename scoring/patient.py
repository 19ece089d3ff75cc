"""Patient inquiries: service offered, location served, payer accepted, ready to schedule.

Patient fields can be health information: every reason here is a fixed sentence that never
quotes what the patient wrote (``"requested service is offered"``, not the service).
"""

from __future__ import annotations

from dataclasses import dataclass

from leadflow.canonical import Lead
from scoring.criteria import Reason, clamp
from scoring.model import PatientRules

MATCH, UNKNOWN, MISMATCH = 1.0, 0.5, 0.0
_SHARES = {"service": 45.0, "location": 35.0, "payer": 20.0}


@dataclass(frozen=True, slots=True)
class PatientCheck:
    service: float
    location: float
    payer: float
    ready: bool | None


def check(lead: Lead, rules: PatientRules) -> PatientCheck:
    inquiry = lead.patient
    service = inquiry.service_requested if inquiry else None
    payer = inquiry.payer if inquiry else None
    return PatientCheck(
        service=_service(service, rules),
        location=_location(inquiry.zip if inquiry else None, lead.state, rules),
        payer=_payer(payer, rules),
        ready=inquiry.scheduling_ready if inquiry else None,
    )


def _service(service: str | None, rules: PatientRules) -> float:
    if not service or not service.strip():
        return UNKNOWN
    return MATCH if rules.services.search(service.lower()) else MISMATCH


def _location(zip_code: str | None, state: str | None, rules: PatientRules) -> float:
    if zip_code and zip_code.strip():
        return MATCH if zip_code.strip().startswith(rules.zip_prefixes) else MISMATCH
    if state and state.strip():
        return MATCH if state.strip().upper() in rules.states else MISMATCH
    return UNKNOWN


def _payer(payer: str | None, rules: PatientRules) -> float:
    if not payer or not payer.strip():
        return UNKNOWN
    if rules.payers is None:
        return MATCH
    return MATCH if rules.payers.search(payer.lower()) else MISMATCH


_TEXTS = {
    ("service", MATCH): "requested service is offered",
    ("service", UNKNOWN): "requested service not stated: ask at intake",
    ("service", MISMATCH): "requested service is not offered",
    ("location", MATCH): "location is served",
    ("location", UNKNOWN): "location unknown: ask at intake",
    ("location", MISMATCH): "location is not served",
    ("payer", MATCH): "payer accepted",
    ("payer", UNKNOWN): "payer unknown: verify at intake",
    ("payer", MISMATCH): "payer not accepted",
}


def patient_fit(result: PatientCheck) -> tuple[int, list[Reason]]:
    score, reasons = 0.0, []
    for part, share in _SHARES.items():
        fraction = getattr(result, part)
        score += fraction * share
        reasons.append(((fraction - 0.6) * share, _TEXTS[(part, fraction)]))
    if result.ready is True:
        reasons.append((10.0, "ready to schedule"))
    elif result.ready is False:
        reasons.append((-10.0, "not ready to schedule yet"))
    else:
        reasons.append((-5.0, "readiness to schedule unknown: ask"))
    return clamp(score), reasons


def patient_stage(result: PatientCheck, rules: PatientRules) -> tuple[str, str]:
    """(stage, the stage's reason)."""
    if result.service == MISMATCH:
        return "redirect", "redirect: we do not offer this service; send alternatives"
    if result.location == MISMATCH:
        return "redirect", "redirect: outside our service area; send alternatives"
    if result.payer == MISMATCH:
        stage = rules.payer_not_accepted_stage
        return stage, f"{stage}: insurance not in network"
    if result.service == MATCH and result.location == MATCH and result.ready is True:
        return "intake_ready", "intake ready: service offered, location served, ready to schedule"
    if result.ready is not True:
        return "nurture", "nurture: follow up until ready to schedule"
    return "nurture", "nurture: confirm service and location before intake"
