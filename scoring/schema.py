"""The model file's schema: what revops may write in ``scoring/default_model.yaml``.

``parse_model_file`` validates a YAML mapping with pydantic and turns every problem into a
``ModelFileError`` that names the file and the dotted key, e.g.
``scoring/default_model.yaml: segments.payer.weights.fitt: unknown criterion 'fitt'``.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from leadflow.canonical import (
    BudgetStatus,
    CareSetting,
    DecisionRole,
    EventType,
    OrgKind,
    Readiness,
    Source,
    Stage,
    Timeline,
)

CRITERIA: tuple[str, ...] = ("fit", "need", "authority", "budget", "timeline", "compliance", "engagement")
B2B_SEGMENTS: tuple[str, ...] = (
    "health_system",
    "practice_single",
    "practice_multi",
    "payer",
    "pharma",
    "digital_health",
    "unknown",
)
SEGMENTS: tuple[str, ...] = B2B_SEGMENTS + ("patient",)
PATIENT_CRITERIA: tuple[str, ...] = ("fit", "engagement")
FIT_COMPONENTS: tuple[str, ...] = ("org_type", "specialty", "care_setting", "size", "geography", "ehr")
SIZE_FIELDS = Literal["bed_count", "provider_count", "location_count", "employee_count", "annual_revenue"]
TEMPLATE_FIELDS = frozenset({"reasons", "segment", "stage", "lead_score"})
MAX_POINTS = 100
"""Upper bound of a criterion weight and of a fit component's share. Both are points on the
0-100 scale every score uses (the shipped weights of a segment sum to 100); the model turns them
into shares of their sum, so one weight above 100 would swamp the rest (a weight of 300 made one
criterion 81% of the score)."""



class ModelFileError(ValueError):
    """A bad model file; ``str()`` is ``"<path>: <key>: <problem>"``."""

    def __init__(self, path: str, key: str, problem: str) -> None:
        self.path, self.key, self.problem = path, key, problem
        super().__init__(f"{path}: {key}: {problem}" if key else f"{path}: {problem}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EventRule(_Strict):
    points: float = Field(ge=0, le=100)
    cap: float = Field(ge=0, le=100)


class Engagement(_Strict):
    half_life_days: float = Field(gt=0, le=3650)
    events: dict[EventType, EventRule]
    source_prior: dict[Source, float]

    @field_validator("source_prior")
    @classmethod
    def _prior_in_range(cls, prior: dict[Source, float]) -> dict[Source, float]:
        for source, points in prior.items():
            if not 0 <= points <= 100:
                raise ValueError(f"source prior for {source.value} must be between 0 and 100 (got {points})")
        return prior


def _scale(enum: type) -> type[BaseModel]:
    """A model with one required 0-100 score per value of ``enum``."""
    fields = {member.value: (float, Field(ge=0, le=100)) for member in enum}
    from pydantic import create_model

    return create_model(f"{enum.__name__}Scale", __base__=_Strict, **fields)  # type: ignore[call-overload]


BudgetScale = _scale(BudgetStatus)
TimelineScale = _scale(Timeline)
ReadinessScale = _scale(Readiness)
RoleScale = _scale(DecisionRole)


class Scales(_Strict):
    budget: BudgetScale  # type: ignore[valid-type]
    timeline: TimelineScale  # type: ignore[valid-type]
    readiness: ReadinessScale  # type: ignore[valid-type]
    role: RoleScale  # type: ignore[valid-type]


class FitComponents(_Strict):
    org_type: float = Field(ge=0, le=MAX_POINTS)
    specialty: float = Field(ge=0, le=MAX_POINTS)
    care_setting: float = Field(ge=0, le=MAX_POINTS)
    size: float = Field(ge=0, le=MAX_POINTS)
    geography: float = Field(ge=0, le=MAX_POINTS)
    ehr: float = Field(ge=0, le=MAX_POINTS)

    @model_validator(mode="after")
    def _some_weight(self) -> "FitComponents":
        if sum(getattr(self, name) for name in FIT_COMPONENTS) <= 0:
            raise ValueError("at least one fit component needs a weight above 0")
        return self


class Need(_Strict):
    label: str = Field(min_length=1)
    keywords: list[str] = Field(min_length=1)


class Disqualify(_Strict):
    title_keywords: list[str] = []
    competitor_domains: list[str] = []
    vendor_domains: list[str] = []
    vendor_title_keywords: list[str] = []
    excluded_specialties: list[str] = []


class BackwardRule(_Strict):
    from_: list[Stage] = Field(alias="from", min_length=1)
    to: Stage
    when: Literal["disqualified", "timeline_distant", "fit_low", "engagement_low"]


class Due(_Strict):
    business_days: int | None = Field(default=None, ge=0, le=60)
    hours: int | None = Field(default=None, ge=1, le=24 * 30)

    @model_validator(mode="after")
    def _exactly_one(self) -> "Due":
        if (self.business_days is None) == (self.hours is None):
            raise ValueError("give exactly one of business_days or hours")
        return self


class NextStepSpec(_Strict):
    id: str = Field(min_length=1, pattern=r"^[a-z0-9][a-z0-9_-]*$")
    subject: str = Field(min_length=1, max_length=255)
    body: str = Field(min_length=1)
    due: Due
    priority: Literal["high", "normal", "low"]

    @field_validator("subject", "body")
    @classmethod
    def _known_placeholders(cls, text: str) -> str:
        for name in re.findall(r"{(\w*)}", text):
            if name not in TEMPLATE_FIELDS:
                raise ValueError(f"unknown placeholder {{{name}}}; use one of {sorted(TEMPLATE_FIELDS)}")
        return text


def _stage_map_fields(required: bool) -> dict[str, Any]:
    default = ... if required else None
    return {stage.value: (NextStepSpec | None if not required else NextStepSpec, default) for stage in Stage}


def _stage_map(name: str, required: bool) -> type[BaseModel]:
    from pydantic import create_model

    return create_model(name, __base__=_Strict, **_stage_map_fields(required))  # type: ignore[call-overload]


NextSteps = _stage_map("NextSteps", required=True)
NextStepOverrides = _stage_map("NextStepOverrides", required=False)


class Weights(_Strict):
    fit: float = Field(default=0, ge=0, le=MAX_POINTS)
    need: float = Field(default=0, ge=0, le=MAX_POINTS)
    authority: float = Field(default=0, ge=0, le=MAX_POINTS)
    budget: float = Field(default=0, ge=0, le=MAX_POINTS)
    timeline: float = Field(default=0, ge=0, le=MAX_POINTS)
    compliance: float = Field(default=0, ge=0, le=MAX_POINTS)
    engagement: float = Field(default=0, ge=0, le=MAX_POINTS)

    @model_validator(mode="after")
    def _some_weight(self) -> "Weights":
        if sum(getattr(self, name) for name in CRITERIA) <= 0:
            raise ValueError("at least one criterion needs a weight above 0")
        return self


class Thresholds(_Strict):
    mql_fit: float = Field(ge=0, le=100)
    mql_engagement: float = Field(ge=0, le=100)
    nurture_fit: float = Field(ge=0, le=100)
    sql_authority: float = Field(ge=0, le=100)


class Choice(_Strict):
    ideal: list[str] = []
    acceptable: list[str] = []
    supported: list[str] = []
    excluded: list[str] = []


class CareSettings(_Strict):
    ideal: list[CareSetting] = []
    acceptable: list[CareSetting] = []
    excluded: list[CareSetting] = []


class OrgKinds(_Strict):
    ideal: list[OrgKind] = []
    acceptable: list[OrgKind] = []
    excluded: list[OrgKind] = []


class SizeRule(_Strict):
    field: SIZE_FIELDS
    min: int = Field(ge=0)
    ideal: int = Field(ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> "SizeRule":
        if self.ideal < self.min:
            raise ValueError(f"ideal ({self.ideal}) is below min ({self.min})")
        return self


class Geography(_Strict):
    countries: list[str] = []
    states: list[str] = []
    excluded_states: list[str] = []


class Specialties(_Strict):
    ideal: list[str] = []
    excluded: list[str] = []


class EhrVendors(_Strict):
    ideal: list[str] = []
    supported: list[str] = []


class Profile(_Strict):
    priority_needs: list[str] = []
    specialties: Specialties = Specialties()
    care_settings: CareSettings = CareSettings()
    org_kinds: OrgKinds = OrgKinds()
    size: list[SizeRule] = []
    geography: Geography = Geography()
    ehr_vendors: EhrVendors = EhrVendors()


class Segment(_Strict):
    label: str = Field(min_length=1)
    weights: Weights
    thresholds: Thresholds
    distant_timelines: list[Timeline] = [Timeline.later]
    profile: Profile
    next_steps: NextStepOverrides = NextStepOverrides()  # type: ignore[valid-type]


class ServiceArea(_Strict):
    zip_prefixes: list[str] = []
    states: list[str] = []


class PatientSegment(_Strict):
    label: str = Field(min_length=1)
    weights: Weights

    @field_validator("weights")
    @classmethod
    def _fit_and_engagement_only(cls, weights: Weights) -> Weights:
        for name in CRITERIA:
            if name not in PATIENT_CRITERIA and getattr(weights, name):
                raise _KeyedError(
                    f"segments.patient.weights.{name}", "patients are scored on fit and engagement only"
                )
        return weights

    services_offered: list[str] = Field(min_length=1)
    service_area: ServiceArea
    payers_accepted: list[str] = []
    payer_not_accepted_stage: Literal["redirect", "nurture"] = "redirect"
    next_steps: NextStepOverrides = NextStepOverrides()  # type: ignore[valid-type]


class Segments(_Strict):
    health_system: Segment
    practice_single: Segment
    practice_multi: Segment
    payer: Segment
    pharma: Segment
    digital_health: Segment
    unknown: Segment
    patient: PatientSegment


class ModelFile(_Strict):
    version: str = Field(min_length=1)
    engagement: Engagement
    scales: Scales
    fit_components: FitComponents
    needs: dict[str, Need] = Field(min_length=1)
    buying_group: list[Literal["administrator", "physician", "procurement", "compliance", "finance"]]
    disqualify: Disqualify = Disqualify()
    backward_rules: list[BackwardRule] = []
    next_steps: NextSteps  # type: ignore[valid-type]
    segments: Segments

    @model_validator(mode="after")
    def _priority_needs_known(self) -> "ModelFile":
        for name in B2B_SEGMENTS:
            for need in getattr(self.segments, name).profile.priority_needs:
                if need not in self.needs:
                    raise _KeyedError(
                        f"segments.{name}.profile.priority_needs", f"unknown need {need!r}; known: {sorted(self.needs)}"
                    )
        return self


class _KeyedError(ValueError):
    """A cross-field problem that knows its own key (pydantic would report it at the root)."""

    def __init__(self, key: str, problem: str) -> None:
        self.key, self.problem = key, problem
        super().__init__(f"{key}: {problem}")


def parse_model_file(data: Any, path: str) -> ModelFile:
    """Validate ``data`` (the YAML document) or raise ``ModelFileError`` naming ``path`` and the key."""
    if not isinstance(data, dict):
        raise ModelFileError(path, "", "the model file must be a YAML mapping")
    try:
        return ModelFile.model_validate(data)
    except ValidationError as exc:
        key, problem = _first_problem(exc)
        raise ModelFileError(path, key, problem) from None


def _first_problem(exc: ValidationError) -> tuple[str, str]:
    error = exc.errors()[0]
    ctx_error = (error.get("ctx") or {}).get("error")
    if isinstance(ctx_error, _KeyedError):
        return ctx_error.key, ctx_error.problem
    loc = [str(part) for part in error["loc"] if not _is_union_tag(part)]
    return ".".join(loc), _friendly(error, loc)


def _is_union_tag(part: Any) -> bool:
    return isinstance(part, str) and part in {"NextStepSpec", "none"}


def _friendly(error: dict[str, Any], loc: list[str]) -> str:
    kind, value, last = error["type"], error.get("input"), loc[-1] if loc else ""
    parent = loc[-2] if len(loc) > 1 else ""
    if kind == "extra_forbidden":
        return _unknown_key(parent, last, loc)
    if kind == "missing":
        return _missing_key(parent, last)
    if kind in {"float_parsing", "float_type", "int_parsing", "int_type"}:
        return f"not a number: {value!r}"
    if kind in {"greater_than_equal", "less_than_equal", "greater_than", "less_than"}:
        return f"out of range: {value!r} ({error['msg'].lower()})"
    if kind == "enum" or kind == "literal_error":
        return f"unknown value {value!r} ({error['msg']})"
    return error["msg"].removeprefix("Value error, ")


def _unknown_key(parent: str, key: str, loc: list[str]) -> str:
    if parent == "weights":
        return f"unknown criterion {key!r}; known: {', '.join(CRITERIA)}"
    if parent == "segments":
        return f"unknown segment {key!r}; known: {', '.join(SEGMENTS)}"
    if parent == "next_steps":
        return f"unknown stage {key!r}; known: {', '.join(s.value for s in Stage)}"
    if parent == "fit_components":
        return f"unknown fit component {key!r}; known: {', '.join(FIT_COMPONENTS)}"
    return f"unknown key {key!r}"


def _missing_key(parent: str, key: str) -> str:
    if parent == "segments":
        return f"segment {key!r} is missing (every segment needs its rules: {', '.join(SEGMENTS)})"
    if parent == "next_steps":
        return f"stage {key!r} has no next step (every stage needs one)"
    return "required key is missing"
