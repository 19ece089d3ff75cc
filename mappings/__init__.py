"""Canonical field <-> CRM field mappings, one YAML file per CRM, edited by revops.

``load_mapping("hubspot")`` reads ``mappings/hubspot.yaml`` (or any path) and validates it: an
unknown canonical field, a duplicate CRM target, a missing required output, a value map naming a
value the canonical field does not have, two canonical values sharing one CRM value, or a YAML key
given twice are each a ``MappingError`` naming the file and the key.

Engagement comes from one of two sources, chosen by ``signals`` (a mapping-only switch):
``fields`` reads ``events:`` (each event type's latest occurrence in a date field, usually a custom
one a workflow fills); ``native`` reads ``native:`` - the date properties the CRM keeps itself,
form conversions (with their names), and activity objects (calls, meetings, campaign responses),
each occurrence an event at its own time. ``deals`` (HubSpot) names the deal properties read as
the lead's outcome (with either ``signals``).

``native_stages`` (off unless ``enabled: true``) puts leadflow's stage where sales already looks:
``write`` renders the stage into a native field through a value map (HubSpot ``lifecyclestage``,
Salesforce Lead ``Status``) under the ``native_stage`` policy, never over a value sales owns;
``read`` takes sales acceptance and manual stages from a native status field (HubSpot
``hs_lead_status``, Salesforce ``Status``). With it off, leadflow reads and writes only its own fields.
"""

from __future__ import annotations

from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from leadflow.canonical import CANONICAL_FIELDS, ENUM_FIELDS, EventType, Stage

MAPPINGS_DIR = Path(__file__).parent

ENUM_OF_FIELD = ENUM_FIELDS  # the canonical model's one table of enumerated fields

DERIVED_OUTPUTS = frozenset({"reasons_detail"})
"""Write-only renderings of an output: ``reasons_detail`` is ``reasons`` in full, for a long text field."""

REQUIRED_OUTPUTS = frozenset(
    {"fit_score", "engagement_score", "lead_score", "stage", "reasons", "next_step", "model_version"}
)

FieldType = Literal["string", "text", "number", "bool", "enumeration", "datetime", "date"]
Direction = Literal["read", "write", "read_write"]
WritePolicy = Literal["always", "if_blank", "never_over_manual", "native_stage"]
NATIVE_STAGE = "native_stage"
"""The derived output ``native_stages.write`` adds to ``writable()``: the stage in the CRM's own field."""


class MappingError(ValueError):
    """A mapping file is wrong; the message names the file and the key."""

    def __init__(self, path: str | Path, key: str, problem: str):
        self.path, self.key, self.problem = str(path), key, problem
        super().__init__(f"{path}: {key}: {problem}")


class FieldMapping(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str = Field(min_length=1, description="the CRM field's API name")
    object: Literal["lead", "company"] = "lead"
    type: FieldType = "string"
    direction: Direction = "read"
    policy: WritePolicy = "always"
    max_length: int | None = Field(default=None, gt=0)
    values: dict[str, str] | None = None
    read_aliases: dict[str, str] | None = Field(
        default=None, description="extra CRM values read as a canonical value (one-way)"
    )

    @property
    def reads(self) -> bool:
        return self.direction in ("read", "read_write")

    @property
    def writes(self) -> bool:
        return self.direction in ("write", "read_write")


class EventMapping(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str = Field(min_length=1, description="datetime of the latest occurrence")
    count_field: str | None = Field(default=None, description="number of occurrences, if the CRM keeps one")


class ConversionMapping(BaseModel):
    """A conversion (form submission) the CRM dates on the lead, e.g. HubSpot's first and most
    recent conversion; its name decides extra event types (``native.conversion_events``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    time_field: str = Field(min_length=1)
    name_field: str | None = None


class ActivityMapping(BaseModel):
    """One CRM activity object read as events: each record matching ``where`` is one ``event`` at
    its ``time_field``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    object: str = Field(min_length=1, description="HubSpot: calls | meetings; Salesforce: Task | Event | CampaignMember")
    event: str
    time_field: str = Field(min_length=1)
    where: dict[str, list[str]] = Field(default_factory=dict, description="field -> accepted values (all must hold)")
    gate_field: str | None = Field(default=None, description="read only for leads with this field set (and not zero)")
    relationship: str | None = Field(default=None, description="Salesforce: the Lead's child relationship")
    link_field: str | None = Field(default=None, description="Salesforce: the child's field naming the lead")
    campaign_field: str | None = Field(default=None, description="a campaign name field: sets the lead's campaign")


class NativeSignals(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    properties: dict[str, EventMapping] = Field(default_factory=dict)
    conversions: list[ConversionMapping] = Field(default_factory=list)
    conversion_events: dict[str, list[str]] = Field(
        default_factory=dict, description="event type -> words: a conversion whose name has one is also that event")
    activities: list[ActivityMapping] = Field(default_factory=list)


class DealMapping(BaseModel):
    """HubSpot deals associated with the contact, read as the lead's opportunity outcome."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    object: str = "deals"
    gate_field: str | None = "num_associated_deals"
    stage_field: str = "dealstage"
    closed_field: str = "hs_is_closed"
    won_field: str = "hs_is_closed_won"
    amount_field: str = "amount"
    close_date_field: str = "closedate"
    created_field: str = "createdate"

    def properties(self) -> list[str]:
        return sorted({self.stage_field, self.closed_field, self.won_field, self.amount_field,
                       self.close_date_field, self.created_field})


class NativeStageWrite(BaseModel):
    """leadflow's stage rendered into the CRM's own stage field. A stage without a value is not
    written there. ``order`` and ``forward_only``: the field's progression (HubSpot's lifecycle
    stage ignores a set to an earlier stage, so a backward move clears it first, in its own
    batch). ``sales_owned``: values only sales sets; leadflow never moves the field away from one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str = Field(min_length=1)
    values: dict[str, str] = Field(min_length=1, description="leadflow stage -> the field's value")
    order: list[str] = Field(default_factory=list, description="the field's values, earliest first")
    forward_only: bool = False
    sales_owned: list[str] = Field(default_factory=list)

    def is_backward(self, current: Any, new: str) -> bool:
        """A move the CRM ignores unless the field is cleared first."""
        if not self.forward_only or current in (None, "") or str(current) not in self.order:
            return False
        return self.order.index(new) < self.order.index(str(current))


class NativeStatusRead(BaseModel):
    """The native status a rep changes, read as sales acceptance or as a stage set by hand."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str = Field(min_length=1)
    accepted: list[str] = Field(default_factory=list, description="statuses meaning sales accepted the lead")
    manual: dict[str, str] = Field(default_factory=dict, description="status -> the stage sales set by hand")

    def statuses(self) -> set[str]:
        return set(self.accepted) | set(self.manual)


class NativeStages(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    write: NativeStageWrite | None = None
    read: NativeStatusRead | None = None

    def field_mapping(self) -> FieldMapping | None:
        """The native stage as a written field (``native_stage`` policy), when on."""
        if not self.enabled or self.write is None:
            return None
        return FieldMapping(field=self.write.field, type="enumeration", direction="write", policy="native_stage",
                            values=dict(self.write.values))

    def fields(self) -> list[str]:
        """The CRM fields a read must fetch for native stages (none when off)."""
        if not self.enabled:
            return []
        return [part.field for part in (self.write, self.read) if part is not None]


class TaskMapping(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    key_field: str = Field(min_length=1, description="task field holding leadflow's idempotency key")
    supersede: Literal["complete", "leave"] = "complete"


class CrmMapping(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    crm: Literal["hubspot", "salesforce"]
    objects: dict[Literal["lead", "company", "task"], str]
    modified_field: str
    sync_marker_field: str | None = Field(
        default=None, description="lead property leadflow stamps on every batch write (HubSpot: the write fences "
                                  "of state/fences.py, so the next read skips its own writes)")
    property_group: str | None = None
    fields: dict[str, FieldMapping]
    signals: Literal["fields", "native"] = "fields"
    events: dict[str, EventMapping] = Field(default_factory=dict)
    native: NativeSignals = Field(default_factory=NativeSignals)
    deals: DealMapping | None = None
    native_stages: NativeStages = Field(default_factory=NativeStages)
    tasks: TaskMapping

    @model_validator(mode="after")
    def _check(self) -> "CrmMapping":
        for name, mapping in self.fields.items():
            if name not in CANONICAL_FIELDS and name not in DERIVED_OUTPUTS:
                raise _KeyProblem(f"fields.{name}", f"unknown canonical field {name!r}")
            _check_values(name, mapping)
        seen: dict[tuple[str, str], str] = {}
        for name, mapping in self.fields.items():
            target = (mapping.object, mapping.field.lower())
            if target in seen:
                raise _KeyProblem(
                    f"fields.{name}.field",
                    f"CRM field {mapping.object}.{mapping.field} is already the target of fields.{seen[target]}",
                )
            seen[target] = name
        for name in self.events:
            if name not in EventType.__members__:
                raise _KeyProblem(f"events.{name}", f"unknown event type {name!r}")
        for key, name in self._native_event_names():
            if name not in EventType.__members__:
                raise _KeyProblem(key, f"unknown event type {name!r}")
        for name in sorted(REQUIRED_OUTPUTS):
            mapping = self.fields.get(name)
            if mapping is None or not mapping.writes:
                raise _KeyProblem(f"fields.{name}", "required output is not mapped for writing")
        _check_native_stages(self.native_stages, self.crm)
        return self

    def _native_event_names(self) -> list[tuple[str, str]]:
        names = [(f"native.properties.{n}", n) for n in self.native.properties]
        names += [(f"native.conversion_events.{n}", n) for n in self.native.conversion_events]
        names += [(f"native.activities.{i}.event", a.event) for i, a in enumerate(self.native.activities)]
        return names

    def property_events(self) -> dict[str, EventMapping]:
        """The event date fields read from the lead record itself, per ``signals``."""
        return self.events if self.signals == "fields" else self.native.properties

    def activities(self) -> list[ActivityMapping]:
        """Activity objects read as events (``signals: native`` only)."""
        return list(self.native.activities) if self.signals == "native" else []

    def conversions(self) -> list[ConversionMapping]:
        return list(self.native.conversions) if self.signals == "native" else []

    def readable(self) -> dict[str, FieldMapping]:
        return self._readable

    def writable(self) -> dict[str, FieldMapping]:
        """Read-only views, computed once: ``plan_update`` asks for every lead."""
        return self._writable

    @cached_property
    def _readable(self) -> dict[str, FieldMapping]:
        return {name: m for name, m in self.fields.items() if m.reads}

    @cached_property
    def _writable(self) -> dict[str, FieldMapping]:
        writable = {name: m for name, m in self.fields.items() if m.writes}
        native = self.native_stages.field_mapping()
        if native is not None:
            writable[NATIVE_STAGE] = native
        return writable

    def crm_fields(self, obj: str = "lead") -> list[str]:
        """Every CRM field of ``obj`` that a read must fetch (mapped fields, events, modified field)."""
        names = {m.field for m in self.fields.values() if m.object == obj}
        if obj == "lead":
            names.add(self.modified_field)
            for event in self.property_events().values():
                names.add(event.field)
                if event.count_field:
                    names.add(event.count_field)
            for conversion in self.conversions():
                names.update(n for n in (conversion.time_field, conversion.name_field) if n)
            names.update(a.gate_field for a in self.activities() if a.gate_field)
            if self.deals is not None and self.deals.gate_field:
                names.add(self.deals.gate_field)
            names.update(self.native_stages.fields())
        return sorted(names)


class _KeyProblem(ValueError):
    def __init__(self, key: str, problem: str):
        self.key, self.problem = key, problem
        super().__init__(problem)


def _check_values(name: str, mapping: FieldMapping) -> None:
    if not mapping.values and not mapping.read_aliases:
        return
    enum = ENUM_OF_FIELD.get(name)
    if enum is None and mapping.type != "bool":
        raise _KeyProblem(f"fields.{name}.values", f"{name!r} is not an enumerated field; remove the value map")
    allowed = {"true", "false"} if enum is None else {member.value for member in enum}
    for key_name, table in (("values", mapping.values or {}), ("read_aliases", mapping.read_aliases or {})):
        canonical_values = table.keys() if key_name == "values" else table.values()
        for value in canonical_values:
            if str(value) not in allowed:
                raise _KeyProblem(
                    f"fields.{name}.{key_name}",
                    f"{value!r} is not a value of {name} (expected one of: {', '.join(sorted(allowed))})",
                )
    crm_values = [str(v) for v in (mapping.values or {}).values()]
    duplicates = sorted({v for v in crm_values if crm_values.count(v) > 1})
    if duplicates:
        raise _KeyProblem(
            f"fields.{name}.values", f"CRM value {duplicates[0]!r} is mapped from two canonical values"
        )


def _check_native_stages(native: NativeStages, crm: str) -> None:
    """What a native stage mapping must hold, so that leadflow neither fights sales nor reads its
    own write as a rep's status change."""
    stages = {member.value for member in Stage}
    if native.enabled and native.write is None and native.read is None:
        raise _KeyProblem("native_stages", "enabled, but neither write nor read is given")
    write, read = native.write, native.read
    if write is not None:
        for stage in write.values:
            if stage not in stages:
                raise _KeyProblem("native_stages.write.values",
                                  f"{stage!r} is not a stage (expected one of: {', '.join(sorted(stages))})")
        for value in write.values.values():
            if value in write.sales_owned:
                raise _KeyProblem("native_stages.write.values", f"{value!r} is sales-owned: leadflow never sets it")
            if write.order and value not in write.order:
                raise _KeyProblem("native_stages.write.order", f"{value!r} (a value leadflow writes) is not in the order")
        for value in write.sales_owned:
            if write.order and value not in write.order:
                raise _KeyProblem("native_stages.write.sales_owned", f"{value!r} is not in the order")
        if write.forward_only and not write.order:
            raise _KeyProblem("native_stages.write.order", "forward_only needs the field's order")
        if write.forward_only and crm != "hubspot":
            raise _KeyProblem("native_stages.write.forward_only", "only HubSpot's lifecycle stage is forward-only")
    if read is not None:
        for status, stage in read.manual.items():
            if stage not in stages:
                raise _KeyProblem(f"native_stages.read.manual.{status}",
                                  f"{stage!r} is not a stage (expected one of: {', '.join(sorted(stages))})")
        both = sorted(set(read.accepted) & set(read.manual))
        if both:
            raise _KeyProblem("native_stages.read", f"status {both[0]!r} is both accepted and manual")
    if write is not None and read is not None and write.field.lower() == read.field.lower():
        own = sorted(set(write.values.values()) & read.statuses())
        if own:
            raise _KeyProblem("native_stages.write.values",
                              f"{own[0]!r} is also a status leadflow reads from {read.field}: leadflow would read "
                              "its own write as a rep's")


def _location(error: dict[str, Any]) -> str:
    return ".".join(str(part) for part in error["loc"]) or "(top level)"


def parse_mapping(raw: Any, path: str | Path) -> CrmMapping:
    """Validate already-parsed YAML; errors name ``path`` and the key."""
    if not isinstance(raw, dict):
        raise MappingError(path, "(top level)", "expected a mapping of keys to values")
    try:
        return CrmMapping.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        cause = error.get("ctx", {}).get("error")
        if isinstance(cause, _KeyProblem):
            raise MappingError(path, cause.key, cause.problem) from None
        raise MappingError(path, _location(error), error["msg"]) from None


def load_mapping(crm_or_path: str | Path) -> CrmMapping:
    """Load ``mappings/<crm>.yaml`` or a path to a mapping file."""
    path = Path(crm_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = MAPPINGS_DIR / f"{crm_or_path}.yaml"
    return _load_cached(str(path.resolve()), path.stat().st_mtime if path.exists() else 0.0)


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (plain YAML keeps the last one
    silently: a second ``signals:`` would switch engagement without a word)."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _value in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


@lru_cache(maxsize=16)
def _load_cached(path: str, _mtime: float) -> CrmMapping:
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise MappingError(path, "(file)", "no such mapping file") from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise MappingError(path, "(yaml)", f"not valid YAML: {exc}") from None
    return parse_mapping(raw, path)
