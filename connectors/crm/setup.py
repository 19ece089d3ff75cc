"""``leadflow crm setup`` / ``check``: make the CRM ready for the mapping, or say what is missing.

HubSpot: the property group and every custom property the mapping names (the ones it writes, the
inputs and event properties it reads, and the task key property on tasks) are created with the
right type/fieldType/options; existing ones (and HubSpot-defined ``hs_*`` ones) are skipped. The
task key property is created with ``hasUniqueValue: true`` (tasks are upserted on it); an existing
one without unique values is a problem: HubSpot cannot make a property unique after creation. The
report names each property (and group) as created or already there; a second run creates nothing.
Salesforce: custom fields need the Metadata API, so ``describe`` is compared with the mapping and
each missing field is listed with its type, length and picklist values for an admin to add; the
task key field must be External ID + Unique (case-sensitive is asked for; case-insensitive also
holds, keys carry 18-character ids), and one that is not is listed too.

Native stages (``native_stages`` in the mapping): every value the mapping names - the stage values it
writes, the sales-owned ones and the order, the statuses it reads - is looked up in the CRM's own
options (HubSpot ``GET /crm/v3/properties/contacts/{name}`` for ``lifecyclestage`` and
``hs_lead_status``; the Salesforce Lead ``describe``'s active ``Status`` picklist values), one line
per value the CRM lacks: a problem (exit 1) when native stages are on, a note when they are off.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from connectors.crm.hubspot import HubSpotConnector
from connectors.crm.salesforce import SalesforceConnector, get_raw
from mappings import ENUM_OF_FIELD, CrmMapping, FieldMapping

HUBSPOT_TYPES = {
    "string": ("string", "text"),
    "text": ("string", "textarea"),
    "number": ("number", "number"),
    "bool": ("bool", "booleancheckbox"),
    "enumeration": ("enumeration", "select"),
    "datetime": ("datetime", "date"),
    "date": ("date", "date"),
}


@dataclass
class SetupReport:
    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # with instructions (Salesforce)
    problems: list[str] = field(default_factory=list)  # exists, but not as leadflow needs it; what to do
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.problems

    def summary(self, applied: bool = True) -> str:
        """One line: what was created (or would be) and what was already there."""
        if not self.created:
            return f"nothing to create: all {len(self.existing)} already exist"
        verb = "created" if applied else "would create"
        return f"{len(self.created)} {verb}, {len(self.existing)} already exist"


def _label(name: str) -> str:
    return name.replace("leadflow_", "Leadflow ").replace("_", " ").strip().title()


def _options(name: str, fm: FieldMapping) -> list[dict[str, Any]]:
    if fm.type == "bool":
        return [{"label": "Yes", "value": "true", "displayOrder": 0}, {"label": "No", "value": "false", "displayOrder": 1}]
    values = fm.values or {}
    if not values and name in ENUM_OF_FIELD:
        values = {m.value: m.value for m in ENUM_OF_FIELD[name]}
    return [{"label": str(v).replace("_", " ").title(), "value": str(v), "displayOrder": i}
            for i, v in enumerate(values.values())]


TASK_KEY = "task key"
SYNC_MARKER = "sync marker (stamped on each write; do not edit)"


def hubspot_property(name: str, fm: FieldMapping, group: str) -> dict[str, Any]:
    type_, field_type = HUBSPOT_TYPES[fm.type]
    body: dict[str, Any] = {"name": fm.field, "label": _label(fm.field), "type": type_, "fieldType": field_type,
                            "groupName": group, "description": f"leadflow: {name}"}
    if fm.type in ("enumeration", "bool"):
        body["options"] = _options(name, fm)
    if name == TASK_KEY:
        body["hasUniqueValue"] = True  # tasks are upserted on it: HubSpot keeps one task per key
    return body


def native_stage_values(mapping: CrmMapping) -> dict[str, list[tuple[str, str]]]:
    """CRM field -> (value, the mapping key naming it) for every value ``native_stages`` names."""
    native = mapping.native_stages
    named: dict[str, list[tuple[str, str]]] = {}
    if native.write is not None:
        wanted = named.setdefault(native.write.field, [])
        wanted += [(v, f"native_stages.write.values.{stage}") for stage, v in native.write.values.items()]
        wanted += [(v, "native_stages.write.sales_owned") for v in native.write.sales_owned]
        wanted += [(v, "native_stages.write.order") for v in native.write.order]
    if native.read is not None:
        wanted = named.setdefault(native.read.field, [])
        wanted += [(v, "native_stages.read.accepted") for v in native.read.accepted]
        wanted += [(v, "native_stages.read.manual") for v in native.read.manual]
    return named


def native_stage_gaps(mapping: CrmMapping, options: dict[str, set[str] | None], where: str) -> list[str]:
    """One line per value ``native_stages`` names that the CRM field lacks (``options[field]``;
    None: the field itself is missing)."""
    lines: list[str] = []
    for crm_field, wanted in native_stage_values(mapping).items():
        have = options.get(crm_field)
        if have is None:
            lines.append(f"{where}.{crm_field}: no such field (named in native_stages)")
            continue
        reported: set[str] = set()
        for value, key in wanted:
            if value not in have and value not in reported:
                reported.add(value)
                lines.append(f"{where}.{crm_field}: no option {value!r} (named in {key})")
    return lines


def _file_native_gaps(report: SetupReport, mapping: CrmMapping, gaps: list[str]) -> None:
    if mapping.native_stages.enabled:
        report.problems.extend(gaps)
    else:
        report.notes.extend(f"{line}; native stages are off" for line in gaps)


def hubspot_native_options(conn: HubSpotConnector) -> dict[str, set[str] | None]:
    """The option values of each contact property ``native_stages`` names (None: no such property)."""
    api = conn.transport.properties_api
    object_type = conn.mapping.objects["lead"]
    out: dict[str, set[str] | None] = {}
    for name in native_stage_values(conn.mapping):
        try:
            prop = conn.transport.call("properties.get", api.core_api.get_by_name, object_type, name)
        except Exception as exc:  # noqa: BLE001 - a missing property is a line of the report
            if getattr(exc, "status", None) == 404:
                out[name] = None
                continue
            raise
        out[name] = {str(o.get("value")) for o in prop.get("options") or [] if not o.get("hidden")}
    return out


def salesforce_native_options(conn: SalesforceConnector) -> dict[str, set[str] | None]:
    """The active picklist values of each Lead field ``native_stages`` names (None: no such field)."""
    described = {f["name"].lower(): f for f in conn.describe(conn.mapping.objects["lead"]).get("fields") or []}
    out: dict[str, set[str] | None] = {}
    for name in native_stage_values(conn.mapping):
        found = described.get(name.lower())
        out[name] = None if found is None else {str(v["value"]) for v in found.get("picklistValues") or []
                                                 if v.get("active", True)}
    return out


def native_stage_report(conn: HubSpotConnector | SalesforceConnector) -> list[str]:
    """The lines for ``crm setup`` / ``crm check``: values the mapping's native stages name that the CRM lacks."""
    if isinstance(conn, HubSpotConnector):
        return native_stage_gaps(conn.mapping, hubspot_native_options(conn), conn.mapping.objects["lead"])
    return native_stage_gaps(conn.mapping, salesforce_native_options(conn), conn.mapping.objects["lead"])


def _hubspot_task_key_problem(object_type: str, existing: dict[str, Any]) -> str | None:
    if existing.get("hasUniqueValue"):
        return None
    name = existing["name"]
    return (f"{object_type}.{name} exists without unique values, and HubSpot cannot make an existing property "
            f"unique: run `leadflow crm repair-tasks --crm hubspot`, create a new task property with "
            f"\"Require unique values\", copy each task's key into it, and name it in mappings/hubspot.yaml "
            f"tasks.key_field")


def hubspot_setup(conn: HubSpotConnector, apply: bool = True) -> SetupReport:
    report = SetupReport()
    mapping = conn.mapping
    group = mapping.property_group or "leadflow"
    api = conn.transport.properties_api
    wanted: dict[str, list[dict[str, Any]]] = {}
    fields = dict(mapping.fields)
    for event, em in mapping.events.items():
        fields[f"event {event}"] = FieldMapping(field=em.field, type="datetime")
        if em.count_field:
            fields[f"event {event} count"] = FieldMapping(field=em.count_field, type="number")
    fields[TASK_KEY] = FieldMapping(field=mapping.tasks.key_field, object="lead", type="string", direction="write")
    if mapping.sync_marker_field:  # write fences (state/fences.py): the next read skips leadflow's own writes
        fields[SYNC_MARKER] = FieldMapping(field=mapping.sync_marker_field, object="lead", type="datetime",
                                           direction="write")
    for name, fm in fields.items():
        if fm.field.startswith("hs_"):
            continue  # HubSpot-defined: exists in every portal, cannot be created
        object_type = mapping.objects["task"] if name == TASK_KEY else mapping.objects[fm.object]
        wanted.setdefault(object_type, []).append(hubspot_property(name, fm, group))
    for object_type, props in wanted.items():
        groups = conn.transport.call("properties.groups", api.groups_api.get_all, object_type)
        if group in {g["name"] for g in groups.get("results") or []}:
            report.existing.append(f"{object_type}: property group {group}")
        else:
            if apply:
                conn.transport.call("properties.groups.create", api.groups_api.create, object_type,
                                    {"name": group, "label": "leadflow", "displayOrder": -1})
            report.created.append(f"{object_type}: property group {group}")
        existing = conn.transport.call("properties.list", api.core_api.get_all, object_type)
        have = {p["name"]: p for p in existing.get("results") or []}
        for body in props:
            label = f"{object_type}.{body['name']} ({body['type']}/{body['fieldType']})"
            if body["name"] in have:
                report.existing.append(label)
                problem = _hubspot_task_key_problem(object_type, have[body["name"]]) if body.get("hasUniqueValue") \
                    else None
                if problem:
                    report.problems.append(problem)
                continue
            if apply:
                conn.transport.call("properties.create", api.core_api.create, object_type, body)
            report.created.append(label)
    _file_native_gaps(report, mapping, native_stage_report(conn))
    return report


SALESFORCE_TASK_KEY = 'External ID + Unique, "ABC" and "abc" different (case-sensitive)'


def _unique_external_id(described: dict[str, Any]) -> bool:
    """Case-insensitive unique is enough too: keys hold 18-character ids, which are case-safe."""
    return bool(described.get("externalId") and described.get("unique"))


def _salesforce_type(name: str, fm: FieldMapping) -> str:
    if name == TASK_KEY:
        return f"Text({fm.max_length or 255}), {SALESFORCE_TASK_KEY}"
    if fm.type == "number":
        return "Number(18, 0)"
    if fm.type == "bool":
        return "Checkbox (default unchecked)"
    if fm.type == "datetime":
        return "Date/Time"
    if fm.type == "date":
        return "Date"
    if fm.type == "text":
        return "Long Text Area(32768)"
    if fm.type == "enumeration":
        values = list((fm.values or {}).values())
        return f"Picklist, values: {', '.join(values)}"
    return f"Text({fm.max_length or 255})"


def salesforce_setup(conn: SalesforceConnector) -> SetupReport:
    report = SetupReport()
    mapping = conn.mapping
    wanted: dict[str, list[tuple[str, FieldMapping]]] = {}
    for name, fm in mapping.fields.items():
        if "." in fm.field:
            continue  # a relationship path (ConvertedOpportunity.StageName): a standard field of another object
        wanted.setdefault(mapping.objects[fm.object], []).append((name, fm))
    for event in mapping.events.values():
        wanted.setdefault(mapping.objects["lead"], []).append(("event", FieldMapping(field=event.field, type="datetime")))
        if event.count_field:
            wanted[mapping.objects["lead"]].append(("event count", FieldMapping(field=event.count_field, type="number")))
    wanted.setdefault(mapping.objects["task"], []).append(
        (TASK_KEY, FieldMapping(field=mapping.tasks.key_field, type="string", max_length=200)))
    for sobject, items in wanted.items():
        described = conn.describe(sobject)
        have = {f["name"].lower(): f for f in described.get("fields") or []}
        for name, fm in items:
            if fm.field.lower() in have:
                report.existing.append(f"{sobject}.{fm.field}")
                if name == TASK_KEY and not _unique_external_id(have[fm.field.lower()]):
                    report.problems.append(
                        f"{sobject}.{fm.field} exists but is not External ID + Unique: edit the field and tick "
                        "External ID and Unique; Salesforce refuses while tasks share a key, so "
                        "run `leadflow crm repair-tasks --crm salesforce` first")
                continue
            access = "read/write" if fm.writes else "read"
            report.missing.append(
                f"{sobject}.{fm.field}: {_salesforce_type(name, fm)} - for {name} ({access}); "
                f"Setup > Object Manager > {sobject} > Fields & Relationships > New, API name {fm.field}"
            )
    _file_native_gaps(report, mapping, native_stage_report(conn))
    return report


def check(conn: HubSpotConnector | SalesforceConnector) -> dict[str, Any]:
    """Auth works, the schema is readable, the native stage values the CRM lacks (``native_stages``),
    and the daily API allocation used and left
    (``daily_api``): Salesforce's ``DailyApiRequests`` from ``GET /services/data/vXX.X/limits``
    (else its ``Sforce-Limit-Info`` header), HubSpot's ``X-HubSpot-RateLimit-Daily(-Remaining)``
    headers (not sent to OAuth apps, which have no daily limit)."""
    if isinstance(conn, HubSpotConnector):
        props = conn.transport.call("properties.list", conn.transport.properties_api.core_api.get_all,
                                    conn.mapping.objects["lead"])
        readable = len(props.get("results") or [])
        limits: dict[str, Any] = {}
        marker = conn.mapping.sync_marker_field
        names = {p.get("name") for p in props.get("results") or []}
        sync_marker = {"property": marker, "present": marker in names} if marker else None
    else:
        readable = len(conn.describe(conn.mapping.objects["lead"]).get("fields") or [])
        limits = _salesforce_limits(conn)
        sync_marker = None
    native = {"enabled": conn.mapping.native_stages.enabled, "missing_values": native_stage_report(conn)}
    usage = conn.api_usage()
    return {"crm": conn.crm, "auth": "ok", "fields_readable": readable, "quota": usage.get("quota"),
            "remaining": usage.get("remaining"), "daily_api": daily_allocation(limits, usage.get("quota") or {}),
            "native_stages": native, "sync_marker": sync_marker}


def _salesforce_limits(conn: SalesforceConnector) -> dict[str, Any]:
    """``DailyApiRequests`` of the limits resource; {} when the user may not read it (it needs
    "View Setup and Configuration"): the call's ``Sforce-Limit-Info`` header still counts."""
    def read(sf: Any) -> dict[str, Any]:
        return get_raw(sf, f"{sf.base_url}limits/", "limits", conn.config.timeout).json()

    try:
        return conn._sf_call("limits", read).get("DailyApiRequests") or {}
    except Exception as exc:  # noqa: BLE001 - a refused limits call only loses the detail
        if getattr(exc, "status", None) in (401, 403, 404):
            return {}
        raise


def daily_allocation(limits: dict[str, Any], quota: dict[str, Any]) -> dict[str, Any]:
    """``{limit, used, left, source}`` from Salesforce's limits resource or the response headers."""
    if isinstance(limits.get("Max"), int) and isinstance(limits.get("Remaining"), int):
        limit, left, source = limits["Max"], limits["Remaining"], "limits resource (DailyApiRequests)"
    elif quota.get("daily_limit") is not None and quota.get("daily_remaining") is not None:
        limit, left, source = quota["daily_limit"], quota["daily_remaining"], "response headers"
    else:
        return {"limit": None, "used": None, "left": None, "source": "not reported by the CRM"}
    return {"limit": limit, "used": max(0, limit - left), "left": left, "source": source}
