"""``leadflow crm setup`` / ``check``: make the CRM ready for the mapping, or say what is missing.

HubSpot: the property group and every custom property the mapping names (the ones it writes, the
inputs and event properties it reads, and the task key property on tasks) are created with the
right type/fieldType/options; existing ones (and HubSpot-defined ``hs_*`` ones) are skipped.
Salesforce: custom fields need the Metadata API, so ``describe`` is compared with the mapping and
each missing field is listed with its type, length and picklist values for an admin to add.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from connectors.hubspot import HubSpotConnector
from connectors.salesforce import SalesforceConnector
from mappings import ENUM_OF_FIELD, FieldMapping

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
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing


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


def hubspot_property(name: str, fm: FieldMapping, group: str) -> dict[str, Any]:
    type_, field_type = HUBSPOT_TYPES[fm.type]
    body: dict[str, Any] = {"name": fm.field, "label": _label(fm.field), "type": type_, "fieldType": field_type,
                            "groupName": group, "description": f"leadflow: {name}"}
    if fm.type in ("enumeration", "bool"):
        body["options"] = _options(name, fm)
    return body


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
    fields["task key"] = FieldMapping(field=mapping.tasks.key_field, object="lead", type="string", direction="write")
    for name, fm in fields.items():
        if fm.field.startswith("hs_"):
            continue  # HubSpot-defined: exists in every portal, cannot be created
        object_type = mapping.objects["task"] if name == "task key" else mapping.objects[fm.object]
        wanted.setdefault(object_type, []).append(hubspot_property(name, fm, group))
    for object_type, props in wanted.items():
        groups = conn.transport.call("properties.groups", api.groups_api.get_all, object_type)
        if group not in {g["name"] for g in groups.get("results") or []}:
            if apply:
                conn.transport.call("properties.groups.create", api.groups_api.create, object_type,
                                    {"name": group, "label": "leadflow", "displayOrder": -1})
            report.created.append(f"{object_type}: property group {group}")
        existing = conn.transport.call("properties.list", api.core_api.get_all, object_type)
        have = {p["name"] for p in existing.get("results") or []}
        for body in props:
            label = f"{object_type}.{body['name']} ({body['type']}/{body['fieldType']})"
            if body["name"] in have:
                report.existing.append(label)
                continue
            if apply:
                conn.transport.call("properties.create", api.core_api.create, object_type, body)
            report.created.append(label)
    return report


def _salesforce_type(name: str, fm: FieldMapping) -> str:
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
        ("task key", FieldMapping(field=mapping.tasks.key_field, type="string", max_length=200)))
    for sobject, items in wanted.items():
        described = conn.describe(sobject)
        have = {f["name"].lower(): f for f in described.get("fields") or []}
        for name, fm in items:
            if fm.field.lower() in have:
                report.existing.append(f"{sobject}.{fm.field}")
                continue
            access = "read/write" if fm.writes else "read"
            report.missing.append(
                f"{sobject}.{fm.field}: {_salesforce_type(name, fm)} - for {name} ({access}); "
                f"Setup > Object Manager > {sobject} > Fields & Relationships > New, API name {fm.field}"
            )
    return report


def check(conn: HubSpotConnector | SalesforceConnector) -> dict[str, Any]:
    """Auth works, schema readable, quota remaining."""
    if isinstance(conn, HubSpotConnector):
        props = conn.transport.call("properties.list", conn.transport.properties_api.core_api.get_all,
                                    conn.mapping.objects["lead"])
        readable = len(props.get("results") or [])
    else:
        readable = len(conn.describe(conn.mapping.objects["lead"]).get("fields") or [])
    usage = conn.api_usage()
    return {"crm": conn.crm, "auth": "ok", "fields_readable": readable, "quota": usage.get("quota"),
            "remaining": usage.get("remaining")}
