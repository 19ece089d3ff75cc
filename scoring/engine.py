"""qualify_batch: score, stage, explain and plan the next step of a batch of canonical leads.

Pure and deterministic: the clock is a parameter, the model is compiled plain data, and the only
state is the batch itself (contacts of one organization form its buying group).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property, lru_cache
from typing import Any, NamedTuple

from leadflow.canonical import Lead, LeadKind, OrgType, Stage
from leadflow.titles import buying_function_from_title
from scoring import criteria, patient, reasons as reasons_mod
from scoring.criteria import OrgContext, Reason, Reasons
from scoring.engagement import engagement
from scoring.model import PatientRules, QualificationModel
from scoring.next_steps import NextStep, render_step
from scoring.stages import Signals, b2b_stage, manual_stage_reason

_SEGMENT_OF_ORG_TYPE = {
    OrgType.health_system: "health_system",
    OrgType.hospital: "health_system",
    OrgType.payer: "payer",
    OrgType.pharma: "pharma",
    OrgType.digital_health: "digital_health",
}
_PRACTICES = frozenset({OrgType.physician_practice, OrgType.clinic})
_NO_ORG = OrgContext()
_STAGES = {stage.value: stage for stage in Stage}


class _Evaluation(NamedTuple):
    """A lead's criteria scores and stage, before they are weighted and ranked."""

    segment: str
    label: str
    steps: dict
    scored: dict[str, tuple[int, Reasons]]
    weights: tuple[tuple[str, float], ...]  # (criterion, share) of the segment
    stage: str
    stage_reasons: list[str]


class _Detail(NamedTuple):
    """What the long forms are rendered from, on first access (a pipeline run writes only the
    short ones): the scoring's inputs, from which the evaluation is made again. A batch's results
    then hold a few objects per lead for the garbage collector to walk, not every reason (leads are
    values: a lead is not changed after it is scored; the pipeline copies it to apply the outputs)."""

    lead: Lead
    org: OrgContext | None  # None for a patient
    now: datetime
    model: QualificationModel

    def evaluation(self) -> _Evaluation:
        if self.org is None:
            return _evaluate_patient(self.lead, self.now, self.model)
        return _evaluate_b2b(self.lead, self.org, self.now, self.model)


@dataclass(frozen=True)
class Qualification:
    """What leadflow concluded about one lead, and why.

    ``reasons_full`` and ``breakdown`` are rendered on first access and then cached.
    """

    crm_id: str
    segment: str
    fit_score: int
    engagement_score: int
    lead_score: int
    stage: Stage
    previous_stage: Stage | None
    stage_changed: bool
    reasons: list[str]
    reasons_compact: str
    next_step: NextStep
    model_version: str
    scored_at: datetime
    criterion_scores: dict[str, int]  # criterion -> its 0-100 score (the feedback report's facts)
    detail: _Detail = field(repr=False, compare=False)

    @classmethod
    def _build(cls, **values: Any) -> "Qualification":
        """Construct without the per-field ``object.__setattr__`` of a frozen dataclass (hot path)."""
        instance = object.__new__(cls)
        instance.__dict__.update(values)
        return instance

    @cached_property
    def reasons_full(self) -> str:
        """Every reason, one per line, for a long text field (``reasons_detail``)."""
        d = self.detail.evaluation()
        scores = (
            f"Scores: lead {self.lead_score}, fit {self.fit_score}, engagement {self.engagement_score}"
            f" ({d.label}, model {self.model_version})"
        )
        previous = self.previous_stage.value if self.previous_stage else None
        return reasons_mod.full(self.stage.value, previous, scores, d.stage_reasons, _weigh(d.scored, d.weights)[1])

    @cached_property
    def breakdown(self) -> dict[str, Any]:
        """criterion -> score, weight, reasons (JSON-serialisable), for the audit log."""
        d = self.detail.evaluation()
        shares = dict(d.weights)
        return {
            "segment": self.segment,
            "stage": {
                "stage": self.stage.value,
                "previous": self.previous_stage.value if self.previous_stage else None,
                "changed": self.stage_changed,
                "reasons": list(d.stage_reasons),
            },
            "scores": {"lead": self.lead_score, "fit": self.fit_score, "engagement": self.engagement_score},
            "criteria": {
                name: {"score": score, "weight": round(shares.get(name, 0.0), 4), "reasons": [t for _, t in rs]}
                for name, (score, rs) in d.scored.items()
            },
            "next_step": self.next_step.to_dict(),
            "model_version": self.model_version,
        }

    def summary(self, now: datetime | None = None) -> dict[str, Any]:
        """The JSON form ``leadflow explain --json`` prints."""
        step = self.next_step.to_dict()
        step["due"] = self.next_step.due(now or self.scored_at).isoformat()
        return {
            "crm_id": self.crm_id,
            "segment": self.segment,
            "stage": self.stage.value,
            "previous_stage": self.previous_stage.value if self.previous_stage else None,
            "lead_score": self.lead_score,
            "fit_score": self.fit_score,
            "engagement_score": self.engagement_score,
            "reasons": self.reasons,
            "next_step": step,
            "model_version": self.model_version,
        }


def segment_of(lead: Lead) -> str:
    """The segment from lead_kind and org_type; a missing or "other" org type is ``unknown``."""
    if lead.lead_kind is LeadKind.patient:
        return "patient"
    org_type = lead.org_type
    if org_type in _PRACTICES:
        return "practice_multi" if (lead.location_count or 0) >= 2 else "practice_single"
    return _SEGMENT_OF_ORG_TYPE.get(org_type, "unknown")  # type: ignore[arg-type]


def org_key(lead: Lead) -> str | None:
    """The organization a contact belongs to: crm_company_id, else company_domain, else company_name."""
    if lead.crm_company_id:
        return "id:" + lead.crm_company_id
    if lead.company_domain:
        return "domain:" + lead.company_domain.strip().lower().removeprefix("www.")
    if lead.company_name:
        return "name:" + " ".join(lead.company_name.lower().split())
    return None


@dataclass(frozen=True)
class OrgMember:
    """A contact of an organization known from elsewhere (earlier pages or runs)."""

    org_key: str
    function: str | None
    decision_maker: bool


def member_of(lead: Lead) -> OrgMember | None:
    """The lead as a member of its organization's buying group (None for patients or no organization)."""
    key = org_key(lead)
    if key is None or lead.lead_kind is LeadKind.patient:
        return None
    function = buying_function_from_title(lead.job_title) if lead.job_title else None
    return OrgMember(key, function, lead.decision_role._value_ == "decision_maker")


def organizations(leads: Sequence[Lead], members: Sequence[OrgMember] = ()) -> dict[str, OrgContext]:
    """The buying group of every organization in the batch: its leads plus ``members`` known from
    elsewhere, so a lead's score does not depend on which contacts share its page."""
    orgs: dict[str, OrgContext] = {}
    for member in members:
        org = orgs.get(member.org_key)
        if org is None:
            org = orgs[member.org_key] = OrgContext()
        if member.function:
            org.functions.add(member.function)
        if member.decision_maker:
            org.has_decision_maker = True
    for lead in leads:
        if lead.lead_kind is LeadKind.patient:
            continue
        key = org_key(lead)
        if key is None:
            continue
        org = orgs.get(key)
        if org is None:
            org = orgs[key] = OrgContext()
        function = buying_function_from_title(lead.job_title) if lead.job_title else None
        if function:
            org.functions.add(function)
        if lead.decision_role._value_ == "decision_maker":
            org.has_decision_maker = True
    return orgs


def qualify_batch(leads: Sequence[Lead], now: datetime, model: QualificationModel,
                  members: Sequence[OrgMember] = ()) -> list[Qualification]:
    """Qualify every lead, in input order. ``now`` is the clock (naive means UTC); ``members`` are
    other known contacts of the leads' organizations (see ``organizations``)."""
    if now.tzinfo is None:
        now = now.replace(tzinfo=timezone.utc)
    orgs = organizations(leads, members)
    return [_qualify_one(lead, orgs, now, model) for lead in leads]


def _qualify_one(lead: Lead, orgs: dict[str, OrgContext], now: datetime, model: QualificationModel) -> Qualification:
    if lead.lead_kind is LeadKind.patient:
        return _qualify_patient(lead, now, model)
    key = org_key(lead)
    return _qualify_b2b(lead, orgs.get(key, _NO_ORG) if key else _own_org(lead), now, model)


def qualify(lead: Lead, now: datetime, model: QualificationModel) -> Qualification:
    """One lead on its own (its buying group is just itself)."""
    return qualify_batch([lead], now, model)[0]


def _own_org(lead: Lead) -> OrgContext:
    function = buying_function_from_title(lead.job_title) if lead.job_title else None
    return OrgContext({function} if function else set(), lead.decision_role.value == "decision_maker")


def _qualify_b2b(lead: Lead, org: OrgContext, now: datetime, model: QualificationModel) -> Qualification:
    return _assemble(lead, _evaluate_b2b(lead, org, now, model), _Detail(lead, org, now, model), model)


def _qualify_patient(lead: Lead, now: datetime, model: QualificationModel) -> Qualification:
    return _assemble(lead, _evaluate_patient(lead, now, model), _Detail(lead, None, now, model), model)


def _evaluate_b2b(lead: Lead, org: OrgContext, now: datetime, model: QualificationModel) -> _Evaluation:
    seg = model.segments[segment_of(lead)]
    fit_score, fit_reasons, excluded = criteria.fit(lead, seg, model)
    scored: dict[str, tuple[int, Reasons]] = {
        "fit": (fit_score, fit_reasons),
        "need": criteria.need(lead, seg, model),
        "authority": criteria.authority(lead, org, model),
        "budget": criteria.budget(lead, model),
        "timeline": criteria.timeline(lead, model),
        "compliance": criteria.compliance(lead, org, model),
        "engagement": engagement(lead, now, model),
    }
    disqualifiers = tuple(criteria.disqualifiers(lead, model) + excluded)
    signals = Signals(fit_score, scored["engagement"][0], scored["authority"][0], disqualifiers)
    manual = manual_stage_reason(lead)
    if manual:
        stage, stage_reasons = lead.manual_stage.value, [manual]  # type: ignore[union-attr]
    else:
        stage, stage_reasons = b2b_stage(lead, seg, signals, model)
    if seg.name == "unknown" and not any("organization type unknown" in r for r in stage_reasons):
        stage_reasons = [*stage_reasons, "organization type unknown: enrich or ask"]
    return _Evaluation(seg.name, seg.label, seg.next_steps, scored, seg.weights, stage, stage_reasons)


def _evaluate_patient(lead: Lead, now: datetime, model: QualificationModel) -> _Evaluation:
    rules: PatientRules = model.patient
    result = patient.check(lead, rules)
    scored = {"fit": patient.patient_fit(result), "engagement": engagement(lead, now, model)}
    manual = manual_stage_reason(lead)
    if manual:
        stage, stage_reasons = lead.manual_stage.value, [manual]  # type: ignore[union-attr]
    else:
        stage, why = patient.patient_stage(result, rules)
        stage_reasons = [why]
    return _Evaluation(rules.name, rules.label, rules.next_steps, scored, rules.weights, stage, stage_reasons)


def _assemble(lead: Lead, ev: _Evaluation, detail: _Detail, model: QualificationModel) -> Qualification:
    scored, stage = ev.scored, ev.stage
    total, weighted = _weigh(scored, ev.weights)
    lead_score = criteria.clamp(total)
    top = reasons_mod.ranked(ev.stage_reasons, weighted)
    compact = reasons_mod.compact(top)
    previous = lead.stage
    return Qualification._build(
        crm_id=lead.crm_id,
        segment=ev.segment,
        fit_score=scored["fit"][0],
        engagement_score=scored["engagement"][0],
        lead_score=lead_score,
        stage=_STAGES[stage],
        previous_stage=previous,
        stage_changed=previous is None or previous != stage,
        reasons=top,
        reasons_compact=compact,
        next_step=render_step(ev.steps[stage], stage, ev.label, lead_score, compact),
        model_version=model.version,
        scored_at=detail.now,
        criterion_scores={name: part[0] for name, part in scored.items()},
        detail=detail,
    )


def _weigh(scored: dict[str, tuple[int, Reasons]], weights: tuple[tuple[str, float], ...]) -> tuple[float, list[Reason]]:
    """The weighted total of the criteria scores, and every reason with its impact weighted by its
    criterion's share (reasons of a criterion with no weight in this segment are not ranked)."""
    total = 0.0
    weighted: list[Reason] = []
    for name, share in weights:
        part = scored.get(name)
        if part is not None:
            total += share * part[0]
            reasons = part[1]
            if type(reasons) is tuple:  # a cached criterion's reasons: weighted once per share
                weighted += _weighted(reasons, share)
            else:
                weighted += [(impact * share, text) for impact, text in reasons]
    return total, weighted


@lru_cache(maxsize=8192)
def _weighted(reasons: tuple[Reason, ...], share: float) -> tuple[Reason, ...]:
    """A cached criterion's reasons with their impact weighted by the segment's share."""
    return tuple((impact * share, text) for impact, text in reasons)


def apply_qualification(lead: Lead, q: Qualification) -> Lead:
    """A copy of ``lead`` with leadflow's outputs set (``next_step`` is the task subject)."""
    return lead.model_copy(
        update={
            "fit_score": q.fit_score,
            "engagement_score": q.engagement_score,
            "lead_score": q.lead_score,
            "stage": q.stage,
            "reasons": list(q.reasons),
            "next_step": q.next_step.subject,
            "model_version": q.model_version,
            "scored_at": q.scored_at,
        }
    )
