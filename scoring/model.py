"""Load the model file and precompile it into plain Python structures for the hot path.

``load_model(path=None)`` reads ``scoring/default_model.yaml`` (or ``path``), validates it
(``scoring/schema.py``) and returns a ``QualificationModel``: tuples, frozensets, dicts and
compiled regular expressions only, so scoring never constructs pydantic objects.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from scoring.schema import B2B_SEGMENTS, CRITERIA, ModelFile, ModelFileError, NextStepSpec, parse_model_file

DEFAULT_MODEL_PATH = Path(__file__).parent / "default_model.yaml"
FALLBACK_SIZE_FIELDS = frozenset({"employee_count", "annual_revenue"})  # size signals when no count is known

_COUNTRY_ALIASES = {
    "USA": "US",
    "UNITED STATES": "US",
    "UNITED STATES OF AMERICA": "US",
    "U S": "US",
    "U S A": "US",
    "UK": "GB",
    "UNITED KINGDOM": "GB",
    "CANADA": "CA",
    "GERMANY": "DE",
    "FRANCE": "FR",
}


def normalize_country(value: str) -> str:
    key = re.sub(r"[^A-Z ]+", " ", value.upper()).strip()
    key = re.sub(r"\s+", " ", key)
    return _COUNTRY_ALIASES.get(key, key)


def keyword_pattern(keywords: list[str] | tuple[str, ...]) -> re.Pattern[str] | None:
    """One case-insensitive regex matching any keyword at a word start; None for no keywords."""
    if not keywords:
        return None
    alternatives = "|".join(re.escape(word.lower()) for word in sorted(keywords, key=len, reverse=True))
    return re.compile(rf"(?<![a-z0-9])(?:{alternatives})")


@dataclass(frozen=True, slots=True)
class StepTemplate:
    id: str
    subject: str
    body: str
    priority: str
    business_days: int | None
    hours: int | None


@dataclass(frozen=True, slots=True)
class SegmentRules:
    name: str
    label: str
    weights: tuple[tuple[str, float], ...]  # (criterion, weight share summing to 1), weight > 0 only
    mql_fit: float
    mql_engagement: float
    nurture_fit: float
    sql_authority: float
    distant_timelines: frozenset[str]
    priority_needs: frozenset[str]
    specialty_ideal: re.Pattern[str] | None
    specialty_excluded: re.Pattern[str] | None
    settings_ideal: frozenset[str]
    settings_acceptable: frozenset[str]
    settings_excluded: frozenset[str]
    kinds_ideal: frozenset[str]
    kinds_acceptable: frozenset[str]
    kinds_excluded: frozenset[str]
    size_rules: tuple[tuple[str, int, int], ...]  # (field, min, ideal): bed, provider, location counts
    fallback_size_rules: tuple[tuple[str, int, int], ...]  # employees, revenue: when none of those is known
    countries: frozenset[str]
    states: frozenset[str]
    excluded_states: frozenset[str]
    ehr_ideal: re.Pattern[str] | None
    ehr_supported: re.Pattern[str] | None
    next_steps: dict[str, StepTemplate]


@dataclass(frozen=True, slots=True)
class PatientRules:
    name: str
    label: str
    weights: tuple[tuple[str, float], ...]
    services: re.Pattern[str]
    zip_prefixes: tuple[str, ...]
    states: frozenset[str]
    payers: re.Pattern[str] | None
    payer_not_accepted_stage: str
    next_steps: dict[str, StepTemplate]


@dataclass(frozen=True, slots=True)
class QualificationModel:
    """The compiled model: everything scoring needs, as plain data."""

    version: str
    source_path: str
    half_life_days: float
    event_rules: dict[str, tuple[float, float]]  # event type -> (points, cap)
    source_prior: dict[str, float]
    budget_scale: dict[str, float]
    timeline_scale: dict[str, float]
    readiness_scale: dict[str, float]
    role_scale: dict[str, float]
    fit_components: tuple[tuple[str, float], ...]  # (component, share summing to 1)
    need_labels: dict[str, str]  # need -> label, in model order
    need_keywords: re.Pattern[str]  # any keyword of any need
    need_of_keyword: dict[str, str]  # keyword (lower case) -> need
    buying_group: tuple[str, ...]
    title_disqualifiers: re.Pattern[str] | None
    vendor_titles: re.Pattern[str] | None
    competitor_domains: frozenset[str]
    vendor_domains: frozenset[str]
    excluded_specialties: re.Pattern[str] | None
    backward_rules: tuple[tuple[frozenset[str], str, str], ...]  # (from stages, to, condition)
    segments: dict[str, SegmentRules]
    patient: PatientRules


    def match_needs(self, text: str) -> list[str]:
        """The known needs a lower-cased pain point mentions, in model order (one regex scan)."""
        found = {self.need_of_keyword[word] for word in self.need_keywords.findall(text)}
        return [name for name in self.need_labels if name in found]


@lru_cache(maxsize=16)
def _load_cached(path: str, mtime_ns: int) -> QualificationModel:
    text = Path(path).read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ModelFileError(_display(path), "", f"not valid YAML: {exc}") from None
    return compile_model(parse_model_file(data, _display(path)), _display(path))


def load_model(path: str | Path | None = None) -> QualificationModel:
    """The compiled model from ``path`` (default ``scoring/default_model.yaml``); cached per file version."""
    resolved = Path(path) if path is not None else DEFAULT_MODEL_PATH
    try:
        mtime = resolved.stat().st_mtime_ns
    except OSError as exc:
        raise ModelFileError(str(resolved), "", f"cannot read the model file: {exc.strerror}") from None
    return _load_cached(str(resolved), mtime)


def _display(path: str) -> str:
    """The path as people know it: relative to the project when it is inside it."""
    try:
        return str(Path(path).resolve().relative_to(DEFAULT_MODEL_PATH.parent.parent))
    except ValueError:
        return path


def compile_model(spec: ModelFile, source_path: str = "<memory>") -> QualificationModel:
    """Turn a validated model file into the plain structures scoring uses."""
    defaults = {stage: _step(step) for stage, step in spec.next_steps.model_dump(by_alias=True).items()}
    segments = {name: _segment(name, getattr(spec.segments, name), defaults) for name in B2B_SEGMENTS}
    return QualificationModel(
        version=spec.version,
        source_path=source_path,
        half_life_days=spec.engagement.half_life_days,
        event_rules={e.value: (rule.points, rule.cap) for e, rule in spec.engagement.events.items()},
        source_prior={s.value: points for s, points in spec.engagement.source_prior.items()},
        budget_scale=spec.scales.budget.model_dump(),
        timeline_scale=spec.scales.timeline.model_dump(),
        readiness_scale=spec.scales.readiness.model_dump(),
        role_scale=spec.scales.role.model_dump(),
        fit_components=_shares(spec.fit_components.model_dump()),
        need_labels={name: need.label for name, need in spec.needs.items()},
        need_keywords=keyword_pattern([k for need in spec.needs.values() for k in need.keywords]),  # type: ignore[arg-type]
        need_of_keyword={k.lower(): name for name, need in spec.needs.items() for k in reversed(need.keywords)},
        buying_group=tuple(spec.buying_group),
        title_disqualifiers=keyword_pattern(spec.disqualify.title_keywords),
        vendor_titles=keyword_pattern(spec.disqualify.vendor_title_keywords),
        competitor_domains=frozenset(d.lower() for d in spec.disqualify.competitor_domains),
        vendor_domains=frozenset(d.lower() for d in spec.disqualify.vendor_domains),
        excluded_specialties=keyword_pattern(spec.disqualify.excluded_specialties),
        backward_rules=tuple(
            (frozenset(s.value for s in rule.from_), rule.to.value, rule.when) for rule in spec.backward_rules
        ),
        segments=segments,
        patient=_patient(spec, defaults),
    )


def _shares(weights: dict[str, float]) -> tuple[tuple[str, float], ...]:
    total = sum(weights.values())
    return tuple((name, weight / total) for name, weight in weights.items() if weight > 0)


def _criterion_shares(weights) -> tuple[tuple[str, float], ...]:
    return _shares({name: getattr(weights, name) for name in CRITERIA})


def _step(spec: NextStepSpec | dict) -> StepTemplate:
    data = spec if isinstance(spec, dict) else spec.model_dump()
    due = data["due"]
    return StepTemplate(
        id=data["id"],
        subject=data["subject"],
        body=data["body"],
        priority=data["priority"],
        business_days=due["business_days"],
        hours=due["hours"],
    )


def _steps(overrides, defaults: dict[str, StepTemplate]) -> dict[str, StepTemplate]:
    steps = dict(defaults)
    for stage, step in overrides.model_dump().items():
        if step is not None:
            steps[stage] = _step(step)
    return steps


def _upper(values: list[str]) -> frozenset[str]:
    return frozenset(v.strip().upper() for v in values)


def _segment(name: str, spec, defaults: dict[str, StepTemplate]) -> SegmentRules:
    profile, thresholds = spec.profile, spec.thresholds
    return SegmentRules(
        name=name,
        label=spec.label,
        weights=_criterion_shares(spec.weights),
        mql_fit=thresholds.mql_fit,
        mql_engagement=thresholds.mql_engagement,
        nurture_fit=thresholds.nurture_fit,
        sql_authority=thresholds.sql_authority,
        distant_timelines=frozenset(t.value for t in spec.distant_timelines),
        priority_needs=frozenset(profile.priority_needs),
        specialty_ideal=keyword_pattern(profile.specialties.ideal),
        specialty_excluded=keyword_pattern(profile.specialties.excluded),
        settings_ideal=frozenset(s.value for s in profile.care_settings.ideal),
        settings_acceptable=frozenset(s.value for s in profile.care_settings.acceptable),
        settings_excluded=frozenset(s.value for s in profile.care_settings.excluded),
        kinds_ideal=frozenset(k.value for k in profile.org_kinds.ideal),
        kinds_acceptable=frozenset(k.value for k in profile.org_kinds.acceptable),
        kinds_excluded=frozenset(k.value for k in profile.org_kinds.excluded),
        size_rules=tuple((r.field, r.min, r.ideal) for r in profile.size if r.field not in FALLBACK_SIZE_FIELDS),
        fallback_size_rules=tuple((r.field, r.min, r.ideal) for r in profile.size if r.field in FALLBACK_SIZE_FIELDS),
        countries=frozenset(normalize_country(c) for c in profile.geography.countries),
        states=_upper(profile.geography.states),
        excluded_states=_upper(profile.geography.excluded_states),
        ehr_ideal=keyword_pattern(profile.ehr_vendors.ideal),
        ehr_supported=keyword_pattern(profile.ehr_vendors.supported),
        next_steps=_steps(spec.next_steps, defaults),
    )


def _patient(spec: ModelFile, defaults: dict[str, StepTemplate]) -> PatientRules:
    patient = spec.segments.patient
    services = keyword_pattern(patient.services_offered)
    assert services is not None  # the schema requires at least one service
    return PatientRules(
        name="patient",
        label=patient.label,
        weights=_criterion_shares(patient.weights),
        services=services,
        zip_prefixes=tuple(patient.service_area.zip_prefixes),
        states=_upper(patient.service_area.states),
        payers=keyword_pattern(patient.payers_accepted),
        payer_not_accepted_stage=patient.payer_not_accepted_stage,
        next_steps=_steps(patient.next_steps, defaults),
    )
