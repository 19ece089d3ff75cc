"""CRM record <-> canonical ``Lead``, through a ``CrmMapping``. Pure functions, no I/O.

Read: ``record_to_lead`` turns a CRM record's properties (and, for HubSpot, its primary
associated company's) into a ``Lead``; ``convert_record`` does the same but returns a
``Quarantined`` (reason names the record and the field) instead of raising, so one bad record
never sinks its page.

Types: HubSpot sends every value as a string (numbers, ``"true"``/``"false"``, datetimes as ISO
or epoch milliseconds); Salesforce sends JSON numbers/bools and ISO datetimes. Both go through
the same parsers.

Events: each date-field entry (``events:`` with ``signals: fields``, ``native.properties`` with
``signals: native``) is the latest occurrence of one event type. It becomes one event at that
time; when the CRM keeps a count property as well, it becomes ``min(count, EVENT_COUNT_CAP)``
events at that same time (the CRM keeps no earlier timestamps, so every occurrence is dated at the
latest one; the cap keeps a contact with 400 visits from dominating engagement scoring). With
``signals: native``, each conversion (HubSpot's first and most recent form submission) is a
``form_fill`` at its own date, plus the event types its name names (``native.conversion_events``),
and the connector adds one event per activity record it read (``activity_event``). Every event
carries its ``origin``: the CRM object and field or record id it came from.

Write: ``to_crm_value`` renders a canonical value in the CRM's form (value maps, numbers, bools,
ISO datetimes, ``max_length`` truncation; ``reasons_detail`` is the full text of ``reasons``);
``values_equal`` compares a current CRM value with a value to write, type-aware.
"""

from __future__ import annotations

import math
from datetime import date, datetime, timezone
from enum import StrEnum
from typing import Any

from pydantic import ValidationError

from connectors.crm.base import Quarantined
from leadflow.canonical import Lead, LeadKind, coerce_enum
from leadflow.redaction import describe, problem
from mappings import ENUM_OF_FIELD, NATIVE_STAGE, ActivityMapping, CrmMapping, FieldMapping

EVENT_COUNT_CAP = 3
REASONS_SEPARATOR = "; "
DETAIL_SEPARATOR = "\n"

# Integer fields with bounds the canonical model enforces: checked here first so the message
# names the CRM field (never the value: leadflow.redaction).
_INT_BOUNDS: dict[str, tuple[int, int | None]] = {
    "fit_score": (0, 100),
    "engagement_score": (0, 100),
    "lead_score": (0, 100),
    "provider_count": (0, None),
    "bed_count": (0, None),
    "location_count": (0, None),
    "employee_count": (0, None),
    "annual_revenue": (0, None),
}


class ConvertError(ValueError):
    """A record cannot become a Lead; ``str()`` is ``"<crm>:<id>: <crm field>: <problem>"``."""

    def __init__(self, crm: str, crm_id: str, field: str | None, problem: str):
        self.crm, self.crm_id, self.field, self.problem = crm, crm_id, field, problem
        where = f"{field}: " if field else ""
        super().__init__(f"{crm}:{crm_id}: {where}{problem}")


class _FieldProblem(ValueError):
    pass


# --------------------------------------------------------------------------- parsing (read)


def is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() == "")


def parse_datetime(value: Any) -> datetime | None:
    """ISO-8601 (``Z``, ``+00:00`` or ``+0000``), epoch milliseconds, or a datetime -> aware UTC."""
    if is_blank(value):
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(value / 1000, tz=timezone.utc)
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        return datetime.fromtimestamp(int(text) / 1000, tz=timezone.utc)
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    elif len(text) > 5 and text[-5] in "+-" and text[-4:].isdigit() and "T" in text:
        text = f"{text[:-2]}:{text[-2:]}"  # Salesforce's +0000
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise _FieldProblem(problem("a date or datetime", value)) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def parse_number(value: Any) -> float | None:
    if is_blank(value):
        return None
    if isinstance(value, bool):
        raise _FieldProblem(problem("a number", value))
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _FieldProblem(problem("a number", value)) from None
    if math.isnan(number) or math.isinf(number):
        raise _FieldProblem(problem("a number", value))
    return number


_TRUE = {"true", "1", "yes", "y", "on", "checked"}
_FALSE = {"false", "0", "no", "n", "off", "unchecked"}


def parse_bool(value: Any) -> bool | None:
    if is_blank(value):
        return None
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise _FieldProblem(problem("true/false", value))


_ENUM_TABLES: dict[int, tuple[FieldMapping, dict[str, Any], dict[str, Any]]] = {}


def _enum_tables(fm: FieldMapping) -> tuple[dict[str, Any], dict[str, Any]]:
    """CRM value -> canonical value of a field (its value map and read aliases), as written and
    case-folded; built once per field mapping object."""
    cached = _ENUM_TABLES.get(id(fm))
    if cached is None or cached[0] is not fm:
        reverse = {str(crm): canonical for canonical, crm in (fm.values or {}).items()}
        reverse.update({str(crm): str(canonical) for crm, canonical in (fm.read_aliases or {}).items()})
        cached = (fm, reverse, {crm.lower(): canonical for crm, canonical in reverse.items()})
        _ENUM_TABLES[id(fm)] = cached
    return cached[1], cached[2]


def _read_enum(fm: FieldMapping, value: Any) -> Any:
    if is_blank(value):
        return None
    text = str(value).strip()
    reverse, folded = _enum_tables(fm)
    if text in reverse:
        return reverse[text]
    return folded.get(text.lower(), text)  # unknown: the canonical model degrades it with a warning


def read_value(name: str, fm: FieldMapping, raw: Any) -> Any:
    """One CRM value -> its canonical form (raises _FieldProblem)."""
    if fm.type == "number":
        number = parse_number(raw)
        if number is None:
            return None
        integral = int(round(number))
        bounds = _INT_BOUNDS.get(name)
        if bounds:
            low, high = bounds
            if integral < low or (high is not None and integral > high):
                limit = f"{low}-{high}" if high is not None else f">= {low}"
                raise _FieldProblem(f"expected a number in {limit}, got {integral}")
        return integral
    if fm.type == "bool":
        return parse_bool(raw)
    if fm.type in ("datetime", "date"):
        return parse_datetime(raw)
    if fm.values or fm.read_aliases or name in ENUM_OF_FIELD:
        return _read_enum(fm, raw)
    if is_blank(raw):
        return None
    if name == "reasons":
        return [part.strip() for part in str(raw).split(REASONS_SEPARATOR.strip()) if part.strip()]
    return str(raw).strip() if not isinstance(raw, str) else raw


_FIELDS_CACHE: dict[int, tuple[CrmMapping, dict[str, FieldMapping], dict[str, FieldMapping], tuple]] = {}

# One readable field as ``record_to_lead`` reads it: canonical name, mapping, CRM field, whether it
# lives on the separate company object, and the nested group and leaf ("discovery", "need_confirmed").
_ReadStep = tuple[str, FieldMapping, str, bool, str | None, str | None]


def _compiled(mapping: CrmMapping) -> tuple[CrmMapping, dict[str, FieldMapping], dict[str, FieldMapping],
                                             tuple[_ReadStep, ...]]:
    """(mapping, readable, writable, read steps), computed once per mapping object."""
    cached = _FIELDS_CACHE.get(id(mapping))
    if cached is None or cached[0] is not mapping:
        readable = mapping.readable()
        separate = mapping.objects.get("company") != mapping.objects.get("lead")
        steps = tuple((name, fm, fm.field, fm.object == "company" and separate,
                       *(name.split(".", 1) if "." in name else (None, None))) for name, fm in readable.items())
        cached = (mapping, readable, mapping.writable(), steps)
        _FIELDS_CACHE[id(mapping)] = cached
    return cached


def _fields(mapping: CrmMapping) -> tuple[dict[str, FieldMapping], dict[str, FieldMapping]]:
    """(readable, writable) of a mapping, computed once per mapping object."""
    cached = _compiled(mapping)
    return cached[1], cached[2]


def current_key(mapping: CrmMapping, fm: FieldMapping) -> str:
    """The key of a CRM field in ``Page.current`` and ``lf_written_values``: the field's API name,
    prefixed ``company.`` when it lives on a separate company object (HubSpot)."""
    if fm.object == "company" and mapping.objects.get("company") != mapping.objects.get("lead"):
        return f"company.{fm.field}"
    return fm.field


def _source_props(mapping: CrmMapping, fm: FieldMapping, props: dict, company: dict | None) -> dict | None:
    if fm.object == "company" and mapping.objects.get("company") != mapping.objects.get("lead"):
        return company
    return props


def record_to_lead(
    mapping: CrmMapping,
    crm_id: str,
    props: dict[str, Any],
    company: dict[str, Any] | None = None,
    company_id: str | None = None,
    native: dict[str, Any] | None = None,
) -> Lead:
    """Build a Lead from CRM properties; raises ``ConvertError`` naming the record and field.
    ``native``: what the connector read from other CRM objects for this lead - ``events`` (from
    ``activity_event``), ``outcome`` (canonical outcome fields) and ``campaign``."""
    crm = mapping.crm
    data: dict[str, Any] = {"crm": crm, "crm_id": str(crm_id)}
    warnings: list[str] = []
    nested: dict[str, dict[str, Any]] = {"discovery": {}, "patient": {}, "outcome": {}}
    for name, fm, field, on_company, group, leaf in _compiled(mapping)[3]:
        source = company if on_company else props
        if source is None or field not in source:
            continue
        try:
            value = read_value(name, fm, source[field])
        except _FieldProblem as problem:
            raise ConvertError(crm, crm_id, field, str(problem)) from None
        if value is None:
            continue
        if group is not None:
            nested[group][leaf] = value
        else:
            data[name] = value
    if nested["discovery"]:
        data["discovery"] = nested["discovery"]
    if nested["patient"]:
        data["patient"] = nested["patient"]
    native = native or {}
    nested["outcome"].update({k: v for k, v in (native.get("outcome") or {}).items() if v is not None})
    if nested["outcome"]:
        data["outcome"] = nested["outcome"]
    if native.get("campaign") and not data.get("campaign"):
        data["campaign"] = native["campaign"]
    _read_native_status(mapping, props, data)
    if "lead_kind" in data and coerce_enum(LeadKind, data["lead_kind"]) is None:
        warnings.append(f"lead_kind: unknown value {describe(data['lead_kind'])} read as b2b")
        data["lead_kind"] = LeadKind.b2b
    if company_id and mapping.objects.get("company") != mapping.objects.get("lead"):
        data["crm_company_id"] = str(company_id)
    try:
        data["modified_at"] = parse_datetime(props.get(mapping.modified_field))
        events = read_events(mapping, props, str(crm_id)) + list(native.get("events") or [])
        events.sort(key=lambda e: e["at"])
        data["events"] = events
    except _FieldProblem as problem:
        raise ConvertError(crm, crm_id, mapping.modified_field, str(problem)) from None
    except ConvertError:
        raise
    if warnings:
        data["warnings"] = warnings
    try:
        return Lead.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = ".".join(str(p) for p in error["loc"])
        field = _crm_field_of(mapping, loc)
        raise ConvertError(crm, crm_id, field, f"{error['msg']} (canonical {loc})") from None


def _read_native_status(mapping: CrmMapping, props: dict[str, Any], data: dict[str, Any]) -> None:
    """``native_stages.read``: a status meaning accepted sets ``sales_accepted`` (leadflow's own
    flag counts too); a status naming a stage sets ``manual_stage`` unless leadflow's own manual
    stage field holds one."""
    native = mapping.native_stages
    if not native.enabled or native.read is None:
        return
    raw = props.get(native.read.field)
    if is_blank(raw):
        return
    status = str(raw).strip().casefold()
    if status in {s.casefold() for s in native.read.accepted}:
        data["sales_accepted"] = True
    manual = {s.casefold(): stage for s, stage in native.read.manual.items()}
    if status in manual and not data.get("manual_stage"):
        data["manual_stage"] = manual[status]


def _crm_field_of(mapping: CrmMapping, loc: str) -> str | None:
    for name, fm in mapping.fields.items():
        if loc == name or loc.startswith(name + "."):
            return fm.field
    return None


def read_events(mapping: CrmMapping, props: dict[str, Any], crm_id: str = "?") -> list[dict[str, Any]]:
    """The events held on the lead record itself: date fields (per ``signals``) and conversions."""
    events: list[dict[str, Any]] = []
    lead_object = mapping.objects["lead"]
    for event_type, em in mapping.property_events().items():
        try:
            at = parse_datetime(props.get(em.field))
        except _FieldProblem as problem:
            raise ConvertError(mapping.crm, crm_id, em.field, str(problem)) from None
        if at is None:
            continue
        origin = f"{mapping.crm} {lead_object}.{em.field}"
        count = 1
        if em.count_field:
            try:
                raw_count = parse_number(props.get(em.count_field))
            except _FieldProblem:
                raw_count = None
            if raw_count is not None:
                count = max(1, min(int(raw_count), EVENT_COUNT_CAP))
        events.extend({"type": event_type, "at": at, "origin": origin} for _ in range(count))
    events.extend(_conversion_events(mapping, props, crm_id))
    events.sort(key=lambda e: e["at"])
    return events


def _conversion_events(mapping: CrmMapping, props: dict[str, Any], crm_id: str) -> list[dict[str, Any]]:
    """A ``form_fill`` per distinct conversion time, plus the event types its name names."""
    events: list[dict[str, Any]] = []
    seen: set[datetime] = set()
    lead_object = mapping.objects["lead"]
    for conversion in mapping.conversions():
        try:
            at = parse_datetime(props.get(conversion.time_field))
        except _FieldProblem as problem:
            raise ConvertError(mapping.crm, crm_id, conversion.time_field, str(problem)) from None
        if at is None or at in seen:
            continue
        seen.add(at)
        origin = f"{mapping.crm} {lead_object}.{conversion.time_field}"
        events.append({"type": "form_fill", "at": at, "origin": origin})
        name = str(props.get(conversion.name_field) or "").lower() if conversion.name_field else ""
        for event_type, words in mapping.native.conversion_events.items():
            if name and any(word.lower() in name for word in words):
                events.append({"type": event_type, "at": at, "origin": origin})
    return events


def _plain_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value).strip().lower()


def activity_matches(activity: ActivityMapping, record: dict[str, Any]) -> bool:
    """Whether an activity record passes the mapping's ``where`` (case-insensitive, every field)."""
    for name, accepted in activity.where.items():
        if _plain_text(record.get(name)) not in {_plain_text(v) for v in accepted}:
            return False
    return True


def activity_event(crm: str, activity: ActivityMapping, record_id: str, record: dict[str, Any],
                   now: datetime) -> dict[str, Any] | None:
    """One activity record (flat field -> value) as an event, or None: it does not match ``where``,
    has no (valid) time, or lies after ``now`` (a meeting not yet held)."""
    if not activity_matches(activity, record):
        return None
    try:
        at = parse_datetime(record.get(activity.time_field))
    except _FieldProblem:
        return None
    if at is None or at > now:
        return None
    return {"type": activity.event, "at": at, "origin": f"{crm} {activity.object} {record_id}"}


def convert_record(
    mapping: CrmMapping,
    crm_id: str,
    props: dict[str, Any],
    company: dict[str, Any] | None = None,
    company_id: str | None = None,
    native: dict[str, Any] | None = None,
) -> Lead | Quarantined:
    """``record_to_lead``, or a ``Quarantined`` with the reason; never raises for bad data."""
    try:
        return record_to_lead(mapping, crm_id, props, company, company_id, native)
    except ConvertError as exc:
        return Quarantined(crm_id=str(crm_id), reason=str(exc), field=exc.field)


def current_values(mapping: CrmMapping, props: dict[str, Any], company: dict[str, Any] | None) -> dict[str, Any]:
    """``Page.current`` for one record: every writable mapped field the read fetched, keyed by
    ``current_key`` (a field left out of the read - a write-only long text - is absent, and
    ``plan_update`` compares it with what leadflow last wrote)."""
    out: dict[str, Any] = {}
    for fm in _fields(mapping)[1].values():
        source = _source_props(mapping, fm, props, company)
        if source is None:
            out[current_key(mapping, fm)] = None  # no company: every company field is blank
        elif fm.field in source:
            out[current_key(mapping, fm)] = source[fm.field]
    return out


# --------------------------------------------------------------------------- rendering (write)


def canonical_value(lead: Lead, name: str) -> Any:
    """The canonical value a mapping key names (dotted paths; ``reasons_detail`` = ``reasons``)."""
    if name == "reasons_detail":
        return lead.reasons
    if name == NATIVE_STAGE:
        return lead.stage
    if "." in name:
        group, leaf = name.split(".", 1)
        parent = getattr(lead, group, None)
        return getattr(parent, leaf, None) if parent is not None else None
    return getattr(lead, name, None)


def format_datetime(value: datetime) -> str:
    """UTC with milliseconds (cut, not rounded) and ``Z``: ``2026-11-30T10:00:00.123Z``."""
    value = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def _truncate(text: str, max_length: int | None) -> str:
    if max_length is None or len(text) <= max_length:
        return text
    return text[: max_length - 1].rstrip() + "…"


def _join_whole(parts: list[Any], separator: str, max_length: int | None) -> str:
    """As many whole reasons, most important first, as fit in ``max_length``; a first reason that
    alone is too long is cut."""
    texts = [str(p) for p in parts]
    if max_length is None:
        return separator.join(texts)
    kept: list[str] = []
    for text in texts:
        if len(separator.join([*kept, text])) > max_length:
            break
        kept.append(text)
    return separator.join(kept) if kept else _truncate(texts[0], max_length)


def to_crm_value(crm: str, name: str, fm: FieldMapping, value: Any) -> Any:
    """A canonical value in the CRM's form; None means "nothing to write"."""
    if value is None or (isinstance(value, list) and not value):
        return None
    stringly = crm == "hubspot"
    if name == "reasons_detail":
        out: Any = _truncate(DETAIL_SEPARATOR.join(str(v) for v in value), fm.max_length)
    elif isinstance(value, list):
        out = _join_whole(value, REASONS_SEPARATOR, fm.max_length)
    elif fm.type == "number":
        number = float(value)
        out = int(number) if number.is_integer() else number
        out = str(out) if stringly else out
    elif fm.type == "bool":
        out = ("true" if value else "false") if stringly else bool(value)
    elif fm.type in ("datetime", "date"):
        moment = parse_datetime(value)
        if fm.type == "date":
            out = moment.date().isoformat()
        else:
            out = format_datetime(moment)
    elif fm.values is not None:
        key = value.value if isinstance(value, StrEnum) else str(value)
        if name == NATIVE_STAGE and key not in fm.values:
            return None  # a stage the native field has no value for is not written there
        out = fm.values.get(key, key)
    else:
        out = _truncate(value.value if isinstance(value, StrEnum) else str(value), fm.max_length)
    return out


def _normalise(fm: FieldMapping, value: Any) -> Any:
    if is_blank(value):
        return None
    try:
        if fm.type == "number":
            return parse_number(value)
        if fm.type == "bool":
            return parse_bool(value)
        if fm.type == "datetime":
            moment = parse_datetime(value)
            return moment.replace(microsecond=moment.microsecond // 1000 * 1000)
        if fm.type == "date":
            return parse_datetime(value).date()
    except _FieldProblem:
        return str(value)
    return str(value)


def values_equal(fm: FieldMapping, current: Any, new: Any) -> bool:
    """Type-aware equality of a CRM value and a value to write ("42" == 42.0, blank == None)."""
    return _normalise(fm, current) == _normalise(fm, new)


def stored_text(value: Any) -> str | None:
    """How a written value is kept in ``lf_written_values``."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
