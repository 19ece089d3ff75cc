"""HubSpot CRM v3 (objects, search, batch, properties) and v4 associations, as a stateful portal.

Objects: contacts, companies, tasks, and the activity and outcome objects leadflow reads - calls
(``0-48``), meetings (``0-47``) and deals (``0-3``), with HubSpot's default association types
(contact_to_call 193 / call_to_contact 194, contact_to_meeting_event 199 / 200, contact_to_deal 4 /
deal_to_contact 3). As in HubSpot, some properties are calculated: a deal's ``hs_is_closed`` and
``hs_is_closed_won`` follow its ``dealstage``; a contact's ``num_associated_deals`` counts its deals
and ``notes_last_contacted`` is the latest ``hs_timestamp`` of its calls and meetings, and logging
one of those (or a deal) on a contact touches the contact's ``lastmodifieddate``.

Paths, bodies, status codes and headers follow the real API (see /work/shared/notes/crm-apis.md
section 1). Property values are strings on the wire; datetime properties are stored as epoch ms
(ints) and rendered ISO-8601 (``2024-01-05T12:34:56.789Z``). The modification time, creation
time and ``hs_object_id`` are kept by the table, not in the property dicts.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from starlette.responses import Response

from sandbox.http import BadJson, Ctx, json_response
from sandbox.store import IdColumn, Table, iso_z, now_ms, parse_datetime_ms

OBJECT_TYPES = ("contacts", "companies", "tasks", "calls", "meetings", "deals")
TYPE_IDS = {"0-1": "contacts", "0-2": "companies", "0-27": "tasks", "0-48": "calls", "0-47": "meetings",
            "0-3": "deals", "contact": "contacts", "company": "companies", "task": "tasks", "call": "calls",
            "meeting": "meetings", "meeting_event": "meetings", "deal": "deals"}
SINGULAR = {"contacts": "contact", "companies": "company", "tasks": "task", "calls": "call", "meetings": "meeting",
            "deals": "deal"}
MODIFIED_PROPS = {"contacts": "lastmodifieddate", "companies": "hs_lastmodifieddate", "tasks": "hs_lastmodifieddate",
                  "calls": "hs_lastmodifieddate", "meetings": "hs_lastmodifieddate", "deals": "hs_lastmodifieddate"}
CREATED_PROPS = {"contacts": "createdate", "companies": "createdate", "tasks": "hs_createdate",
                 "calls": "hs_createdate", "meetings": "hs_createdate", "deals": "createdate"}
ACTIVITY_TYPES = ("calls", "meetings")
CLOSED_STAGES = {"closedwon": True, "closedlost": False}  # the default sales pipeline's closed stages
VIRTUAL_MODIFIED = frozenset({"lastmodifieddate", "hs_lastmodifieddate"})
VIRTUAL_CREATED = frozenset({"createdate", "hs_createdate"})
DEFAULT_PROPERTIES = {
    "contacts": ["createdate", "email", "firstname", "hs_object_id", "lastmodifieddate", "lastname"],
    "companies": ["createdate", "domain", "hs_lastmodifieddate", "hs_object_id", "name"],
    "tasks": ["hs_createdate", "hs_lastmodifieddate", "hs_object_id"],
    "calls": ["hs_createdate", "hs_lastmodifieddate", "hs_object_id"],
    "meetings": ["hs_createdate", "hs_lastmodifieddate", "hs_object_id"],
    "deals": ["amount", "closedate", "createdate", "dealname", "dealstage", "hs_lastmodifieddate", "hs_object_id",
              "pipeline"],
}
# HubSpot's default company property ``industry`` is an enumeration of LinkedIn-style codes (about 150 in a
# real portal); the ones the seed writes and a few neighbours.
INDUSTRIES: tuple[tuple[str, str], ...] = (
    ("BIOTECHNOLOGY", "Biotechnology"), ("COMPUTER_SOFTWARE", "Computer Software"),
    ("FINANCIAL_SERVICES", "Financial Services"), ("HEALTH_WELLNESS_AND_FITNESS", "Health, Wellness and Fitness"),
    ("HIGHER_EDUCATION", "Higher Education"), ("HOSPITAL_HEALTH_CARE", "Hospital & Health Care"),
    ("INFORMATION_TECHNOLOGY_AND_SERVICES", "Information Technology and Services"), ("INSURANCE", "Insurance"),
    ("INTERNET", "Internet"), ("MANAGEMENT_CONSULTING", "Management Consulting"),
    ("MEDICAL_DEVICES", "Medical Devices"), ("MEDICAL_PRACTICE", "Medical Practice"),
    ("MENTAL_HEALTH_CARE", "Mental Health Care"),
    ("NON_PROFIT_ORGANIZATION_MANAGEMENT", "Non-Profit Organization Management"),
    ("PHARMACEUTICALS", "Pharmaceuticals"), ("RESEARCH", "Research"), ("RETAIL", "Retail"),
    ("VENTURE_CAPITAL_PRIVATE_EQUITY", "Venture Capital & Private Equity"),
)
ID_START = {"contacts": 10_001, "companies": 5_000_001, "tasks": 90_000_000_001, "calls": 60_000_000_001,
            "meetings": 70_000_000_001, "deals": 30_000_001}

# (from, to) -> (primary or only type id, extra "unlabeled" type id or None, label of the first)
ASSOCIATION_TYPES: dict[tuple[str, str], tuple[int, int | None, str | None]] = {
    ("contacts", "companies"): (1, 279, "Primary"),
    ("companies", "contacts"): (2, 280, "Primary"),
    ("tasks", "contacts"): (204, None, None),
    ("contacts", "tasks"): (203, None, None),
    ("tasks", "companies"): (192, None, None),
    ("companies", "tasks"): (191, None, None),
    ("contacts", "calls"): (193, None, None),
    ("calls", "contacts"): (194, None, None),
    ("contacts", "meetings"): (199, None, None),
    ("meetings", "contacts"): (200, None, None),
    ("contacts", "deals"): (4, None, None),
    ("deals", "contacts"): (3, None, None),
}
ASSOCIATION_NAMES = {
    1: "contact_to_company", 279: "contact_to_company_unlabeled", 2: "company_to_contact",
    280: "company_to_contact_unlabeled", 204: "task_to_contact", 203: "contact_to_task",
    192: "task_to_company", 191: "company_to_task", 193: "contact_to_call", 194: "call_to_contact",
    199: "contact_to_meeting_event", 200: "meeting_event_to_contact", 4: "contact_to_deal", 3: "deal_to_contact",
}

SEARCHABLE = {"contacts": ("firstname", "lastname", "email", "phone", "company"),
              "companies": ("name", "domain", "phone"), "tasks": ("hs_task_subject", "hs_task_body"),
              "calls": ("hs_call_title",), "meetings": ("hs_meeting_title",), "deals": ("dealname",)}
SEARCH_MAX_LIMIT = 200
SEARCH_RESULT_CAP = 10_000
BATCH_LIMIT = 100
LIST_MAX_LIMIT = 100
FILTER_OPERATORS = frozenset({"EQ", "NEQ", "LT", "LTE", "GT", "GTE", "BETWEEN", "IN", "NOT_IN", "HAS_PROPERTY",
                              "NOT_HAS_PROPERTY", "CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN"})


def _prop(name: str, label: str, type_: str, field_type: str, group: str, options: Iterable[tuple[str, str]] = (),
          hubspot_defined: bool = True, read_only: bool = False) -> dict[str, Any]:
    stamp = "2019-08-06T02:43:14.491Z"
    return {
        "updatedAt": stamp, "createdAt": stamp, "name": name, "label": label, "type": type_,
        "fieldType": field_type, "description": "", "groupName": group,
        "options": [{"label": lab, "value": val, "displayOrder": i, "hidden": False}
                    for i, (val, lab) in enumerate(options)],
        "displayOrder": -1, "calculated": False, "externalOptions": False, "hasUniqueValue": False,
        "hidden": False, "hubspotDefined": hubspot_defined, "formField": not read_only,
        "modificationMetadata": {"archivable": not hubspot_defined, "readOnlyDefinition": hubspot_defined,
                                 "readOnlyValue": read_only},
        "dataSensitivity": "non_sensitive",
    }


_BOOL_OPTIONS = (("true", "Yes"), ("false", "No"))
# hs_analytics_source / hs_latest_source options (HubSpot's Original Source)
ANALYTICS_SOURCES = (("ORGANIC_SEARCH", "Organic Search"), ("PAID_SEARCH", "Paid Search"),
                     ("EMAIL_MARKETING", "Email Marketing"), ("SOCIAL_MEDIA", "Organic Social"),
                     ("REFERRALS", "Referrals"), ("OTHER_CAMPAIGNS", "Other Campaigns"),
                     ("DIRECT_TRAFFIC", "Direct Traffic"), ("OFFLINE", "Offline Sources"),
                     ("PAID_SOCIAL", "Paid Social"), ("AI_REFERRALS", "AI Referrals"))
LEAD_STATUSES = tuple((v, v.replace("_", " ").title()) for v in (
    "NEW", "OPEN", "IN_PROGRESS", "OPEN_DEAL", "UNQUALIFIED", "ATTEMPTED_TO_CONTACT", "CONNECTED", "BAD_TIMING"))
LIFECYCLE_STAGES = (("subscriber", "Subscriber"), ("lead", "Lead"), ("marketingqualifiedlead", "Marketing Qualified Lead"),
                    ("salesqualifiedlead", "Sales Qualified Lead"), ("opportunity", "Opportunity"),
                    ("customer", "Customer"), ("evangelist", "Evangelist"))
CALL_STATUSES = tuple((v, v.replace("_", " ").title()) for v in (
    "BUSY", "CALLING_CRM_USER", "CANCELED", "COMPLETED", "CONNECTING", "FAILED", "IN_PROGRESS", "MISSED",
    "NO_ANSWER", "QUEUED", "RINGING"))
MEETING_OUTCOMES = tuple((v, v.replace("_", " ").title()) for v in (
    "SCHEDULED", "COMPLETED", "RESCHEDULED", "NO_SHOW", "CANCELED"))
DEAL_STAGES = (("appointmentscheduled", "Appointment Scheduled"), ("qualifiedtobuy", "Qualified To Buy"),
               ("presentationscheduled", "Presentation Scheduled"), ("decisionmakerboughtin", "Decision Maker Bought-In"),
               ("contractsent", "Contract Sent"), ("closedwon", "Closed Won"), ("closedlost", "Closed Lost"))


def standard_properties() -> dict[str, dict[str, dict[str, Any]]]:
    """HubSpot's built-in properties that leadflow touches, per object type."""
    info = {"contacts": "contactinformation", "companies": "companyinformation", "tasks": "task",
            "calls": "callinformation", "meetings": "meetinginformation", "deals": "dealinformation"}
    text = lambda obj, name, label: _prop(name, label, "string", "text", info[obj])  # noqa: E731
    stamp = lambda obj, name, label, ro=True: _prop(name, label, "datetime", "date", info[obj], read_only=ro)  # noqa: E731
    number = lambda obj, name, label, ro=False: _prop(name, label, "number", "number", info[obj], read_only=ro)  # noqa: E731
    contacts = [
        text("contacts", "email", "Email"), text("contacts", "firstname", "First Name"),
        text("contacts", "lastname", "Last Name"), text("contacts", "jobtitle", "Job Title"),
        text("contacts", "phone", "Phone Number"), text("contacts", "company", "Company Name"),
        text("contacts", "website", "Website URL"), text("contacts", "city", "City"),
        text("contacts", "state", "State/Region"), text("contacts", "zip", "Postal Code"),
        text("contacts", "country", "Country/Region"),
        _prop("lifecyclestage", "Lifecycle Stage", "enumeration", "radio", "contactinformation",
              [(v, v.title()) for v in ("subscriber", "lead", "marketingqualifiedlead", "salesqualifiedlead",
                                        "opportunity", "customer", "evangelist", "other")]),
        text("contacts", "hubspot_owner_id", "Contact owner"),
        stamp("contacts", "createdate", "Create Date"), stamp("contacts", "lastmodifieddate", "Last Modified Date"),
        stamp("contacts", "hs_lastmodifieddate", "Object last modified date/time"),
        number("contacts", "hs_object_id", "Record ID", ro=True),
        stamp("contacts", "hs_analytics_last_visit_timestamp", "Time of Last Session"),
        number("contacts", "hs_analytics_num_visits", "Number of Sessions", ro=True),
        stamp("contacts", "hs_email_last_click_date", "Last marketing email click date"),
        stamp("contacts", "recent_conversion_date", "Recent Conversion Date"),
        number("contacts", "num_conversion_events", "Number of Form Submissions", ro=True),
        stamp("contacts", "first_conversion_date", "First Conversion Date"),
        _prop("first_conversion_event_name", "First Conversion", "string", "text", "contactinformation",
              read_only=True),
        _prop("recent_conversion_event_name", "Recent Conversion", "string", "text", "contactinformation",
              read_only=True),
        _prop("hs_analytics_source", "Original Source", "enumeration", "select", "analyticsinformation",
              ANALYTICS_SOURCES, read_only=True),
        _prop("hs_analytics_source_data_1", "Original Source Drill-Down 1", "string", "text", "analyticsinformation",
              read_only=True),
        _prop("hs_analytics_source_data_2", "Original Source Drill-Down 2", "string", "text", "analyticsinformation",
              read_only=True),
        _prop("hs_latest_source", "Latest Source", "enumeration", "select", "analyticsinformation",
              ANALYTICS_SOURCES, read_only=True),
        _prop("hs_latest_source_data_1", "Latest Source Drill-Down 1", "string", "text", "analyticsinformation",
              read_only=True),
        _prop("hs_lead_status", "Lead Status", "enumeration", "radio", "contactinformation", LEAD_STATUSES),
        *[stamp("contacts", f"hs_lifecyclestage_{stage}_date", f"Became a {label} Date")
          for stage, label in LIFECYCLE_STAGES],
        stamp("contacts", "notes_last_contacted", "Last Contacted"),
        number("contacts", "num_associated_deals", "Number of Associated Deals", ro=True),
    ]
    companies = [
        text("companies", "name", "Company name"), text("companies", "domain", "Company Domain Name"),
        text("companies", "city", "City"), text("companies", "state", "State/Region"),
        text("companies", "zip", "Postal Code"), text("companies", "country", "Country/Region"),
        text("companies", "phone", "Phone Number"), _prop("industry", "Industry", "enumeration", "select", "companyinformation", INDUSTRIES),
        number("companies", "numberofemployees", "Number of Employees"),
        number("companies", "annualrevenue", "Annual Revenue"),
        stamp("companies", "createdate", "Create Date"),
        stamp("companies", "hs_lastmodifieddate", "Last Modified Date"),
        number("companies", "hs_object_id", "Record ID", ro=True),
    ]
    tasks = [
        text("tasks", "hs_task_subject", "Task Title"),
        _prop("hs_task_body", "Task notes", "string", "html", "task"),
        _prop("hs_task_status", "Task Status", "enumeration", "select", "task",
              [("NOT_STARTED", "Not Started"), ("IN_PROGRESS", "In Progress"), ("WAITING", "Waiting"),
               ("COMPLETED", "Completed"), ("DEFERRED", "Deferred")]),
        _prop("hs_task_priority", "Priority", "enumeration", "select", "task",
              [("NONE", "None"), ("LOW", "Low"), ("MEDIUM", "Medium"), ("HIGH", "High")]),
        _prop("hs_task_type", "Task Type", "enumeration", "select", "task",
              [("EMAIL", "Email"), ("CALL", "Call"), ("TODO", "To-do")]),
        _prop("hs_timestamp", "Due date", "datetime", "date", "task"),
        stamp("tasks", "hs_task_completion_date", "Completed at"),
        text("tasks", "hubspot_owner_id", "Assigned to"),
        stamp("tasks", "hs_createdate", "Created at"),
        stamp("tasks", "hs_lastmodifieddate", "Last Modified Date"),
        number("tasks", "hs_object_id", "Record ID", ro=True),
    ]
    calls = [
        _prop("hs_timestamp", "Activity date", "datetime", "date", "callinformation"),
        text("calls", "hs_call_title", "Call Title"), _prop("hs_call_body", "Call notes", "string", "html", "callinformation"),
        _prop("hs_call_status", "Call status", "enumeration", "select", "callinformation", CALL_STATUSES),
        _prop("hs_call_disposition", "Call outcome", "string", "select", "callinformation"),
        _prop("hs_call_direction", "Call direction", "enumeration", "select", "callinformation",
              [("INBOUND", "Inbound"), ("OUTBOUND", "Outbound")]),
        number("calls", "hs_call_duration", "Call duration"),
        stamp("calls", "hs_createdate", "Created at"), stamp("calls", "hs_lastmodifieddate", "Last Modified Date"),
        number("calls", "hs_object_id", "Record ID", ro=True),
    ]
    meetings = [
        _prop("hs_timestamp", "Activity date", "datetime", "date", "meetinginformation"),
        text("meetings", "hs_meeting_title", "Meeting name"),
        _prop("hs_meeting_body", "Meeting description", "string", "html", "meetinginformation"),
        _prop("hs_meeting_start_time", "Start Time", "datetime", "date", "meetinginformation"),
        _prop("hs_meeting_end_time", "End Time", "datetime", "date", "meetinginformation"),
        _prop("hs_meeting_outcome", "Meeting outcome", "enumeration", "select", "meetinginformation", MEETING_OUTCOMES),
        stamp("meetings", "hs_createdate", "Created at"),
        stamp("meetings", "hs_lastmodifieddate", "Last Modified Date"),
        number("meetings", "hs_object_id", "Record ID", ro=True),
    ]
    deals = [
        text("deals", "dealname", "Deal Name"),
        _prop("pipeline", "Pipeline", "enumeration", "select", "dealinformation", [("default", "Sales Pipeline")]),
        _prop("dealstage", "Deal Stage", "enumeration", "radio", "dealinformation", DEAL_STAGES),
        number("deals", "amount", "Amount"),
        _prop("closedate", "Close Date", "datetime", "date", "dealinformation"),
        _prop("hs_is_closed", "Is Deal Closed?", "bool", "booleancheckbox", "dealinformation", _BOOL_OPTIONS,
              read_only=True),
        _prop("hs_is_closed_won", "Is Closed Won", "bool", "booleancheckbox", "dealinformation", _BOOL_OPTIONS,
              read_only=True),
        stamp("deals", "createdate", "Create Date"), stamp("deals", "hs_lastmodifieddate", "Last Modified Date"),
        number("deals", "hs_object_id", "Record ID", ro=True),
    ]
    return {name: {p["name"]: p for p in props}
            for name, props in (("contacts", contacts), ("companies", companies), ("tasks", tasks),
                                ("calls", calls), ("meetings", meetings), ("deals", deals))}


def standard_groups() -> dict[str, dict[str, dict[str, Any]]]:
    def group(name: str, label: str, order: int) -> dict[str, Any]:
        return {"name": name, "label": label, "displayOrder": order, "archived": False}

    return {
        "contacts": {"contactinformation": group("contactinformation", "Contact information", 0),
                     "emailinformation": group("emailinformation", "Email information", 1),
                     "analyticsinformation": group("analyticsinformation", "Web analytics history", 2)},
        "companies": {"companyinformation": group("companyinformation", "Company information", 0)},
        "tasks": {"task": group("task", "Task information", 0)},
        "calls": {"callinformation": group("callinformation", "Call information", 0)},
        "meetings": {"meetinginformation": group("meetinginformation", "Meeting information", 0)},
        "deals": {"dealinformation": group("dealinformation", "Deal information", 0)},
    }


_NOT_CALCULATED = object()


class HubSpotError(Exception):
    """An error answer in HubSpot's shape."""

    def __init__(self, status: int, message: str, category: str, errors: list[dict[str, Any]] | None = None,
                 context: dict[str, list[str]] | None = None, sub_category: str | None = None):
        super().__init__(message)
        self.status, self.message, self.category = status, message, category
        self.errors, self.context, self.sub_category = errors, context, sub_category

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": "error", "message": self.message,
                               "correlationId": str(uuid.uuid4()), "category": self.category}
        if self.sub_category:
            out["subCategory"] = self.sub_category
        if self.context:
            out["context"] = self.context
        if self.errors:
            out["errors"] = self.errors
        return out


def error_response(exc: HubSpotError, headers: dict[str, str] | None = None) -> Response:
    return json_response(exc.body(), exc.status, headers)


def _validation(message: str, errors: list[dict[str, Any]] | None = None) -> HubSpotError:
    return HubSpotError(400, message, "VALIDATION_ERROR", errors)


class HubSpotPortal:
    """The portal's records, property definitions, groups and associations."""

    def __init__(self) -> None:
        self.tables: dict[str, Table] = {name: Table(name, int) for name in OBJECT_TYPES}
        self.properties = standard_properties()
        self.groups = standard_groups()
        self.links: dict[tuple[str, str], dict[str, dict[str, list[int]]]] = {
            pair: {} for pair in ASSOCIATION_TYPES
        }
        self._ids = {name: itertools.count(start) for name, start in ID_START.items()}
        self.portal_id = 24_681_357

    # -- ids and associations -------------------------------------------------------------------
    def next_id(self, object_type: str) -> str:
        table = self.tables[object_type]
        while True:
            candidate = str(next(self._ids[object_type]))
            if candidate not in table:
                return candidate

    def reserve_ids_after(self, object_type: str) -> None:
        """Continue numbering after the highest loaded id."""
        table = self.tables[object_type]
        highest = max((int(i) for i in table.records), default=ID_START[object_type] - 1)
        self._ids[object_type] = itertools.count(max(highest + 1, ID_START[object_type]))

    def associate(self, from_type: str, from_id: str, to_type: str, to_id: str, type_id: int | None = None) -> None:
        primary, unlabeled, _ = ASSOCIATION_TYPES[(from_type, to_type)]
        forward = self.links[(from_type, to_type)].setdefault(from_id, {})
        types = forward.setdefault(to_id, [])
        wanted = [type_id] if type_id is not None else ([primary] + ([unlabeled] if unlabeled else []))
        if type_id == primary and unlabeled and unlabeled not in types:
            wanted.append(unlabeled)
        for value in wanted:
            if value not in types:
                types.append(value)
        reverse_primary, reverse_unlabeled, _ = ASSOCIATION_TYPES[(to_type, from_type)]
        back = self.links[(to_type, from_type)].setdefault(to_id, {}).setdefault(from_id, [])
        for value in ([reverse_primary] if primary in types else []) + ([reverse_unlabeled] if reverse_unlabeled else []):
            if value is not None and value not in back:
                back.append(value)
        if not back:
            back.append(reverse_primary)

    def associated(self, from_type: str, from_id: str, to_type: str) -> dict[str, list[int]]:
        return self.links.get((from_type, to_type), {}).get(from_id, {})

    # -- property values ------------------------------------------------------------------------
    def value(self, object_type: str, record_id: str, record: dict[str, Any], name: str) -> str | None:
        table = self.tables[object_type]
        if name in VIRTUAL_MODIFIED:
            return iso_z(table.modified[record_id])
        if name in VIRTUAL_CREATED:
            return iso_z(table.created[record_id])
        if name == "hs_object_id":
            return record_id
        calculated = self._calculated(object_type, record_id, record, name)
        if calculated is not _NOT_CALCULATED:
            return calculated
        raw = record.get(name)
        if raw is None:
            return None
        return iso_z(raw) if type(raw) is int else raw

    def _calculated(self, object_type: str, record_id: str, record: dict[str, Any], name: str) -> Any:
        """HubSpot's calculated properties (module docstring), or ``_NOT_CALCULATED``."""
        if object_type == "deals" and name in ("hs_is_closed", "hs_is_closed_won"):
            stage = record.get("dealstage")
            won = CLOSED_STAGES.get(stage)
            closed = stage in CLOSED_STAGES
            return ("true" if closed else "false") if name == "hs_is_closed" else ("true" if won else "false")
        if object_type == "contacts" and name == "num_associated_deals":
            count = len(self.associated("contacts", record_id, "deals"))
            return str(count) if count else None
        if object_type == "contacts" and name == "notes_last_contacted":
            stamps = [self.tables[kind].records[i].get("hs_timestamp") for kind in ACTIVITY_TYPES
                      for i in self.associated("contacts", record_id, kind) if i in self.tables[kind]]
            stamps = [s for s in stamps if type(s) is int]
            if stamps:
                return iso_z(max(stamps))
        return _NOT_CALCULATED

    def render(self, object_type: str, record_id: str, names: Iterable[str] | None) -> dict[str, Any]:
        table = self.tables[object_type]
        record = table.records[record_id]
        known = self.properties[object_type]
        wanted = list(names) if names is not None else DEFAULT_PROPERTIES[object_type]
        if names is not None:
            wanted += [CREATED_PROPS[object_type], MODIFIED_PROPS[object_type], "hs_object_id"]
        props = {name: self.value(object_type, record_id, record, name) for name in wanted if name in known}
        return {
            "id": record_id, "properties": props,
            "createdAt": iso_z(table.created[record_id]), "updatedAt": iso_z(table.modified[record_id]),
            "archived": False,
        }

    def numeric(self, object_type: str, record_id: str, name: str) -> float | None:
        """A property's value as a number for range filters and sorts (datetimes as epoch ms)."""
        table = self.tables[object_type]
        if name in VIRTUAL_MODIFIED:
            return table.modified[record_id]
        if name in VIRTUAL_CREATED:
            return table.created[record_id]
        if name == "hs_object_id":
            return int(record_id)
        raw = table.records[record_id].get(name)
        if raw is None or raw == "":
            return None
        if type(raw) is int:
            return raw
        prop = self.properties[object_type].get(name, {})
        if prop.get("type") in ("datetime", "date"):
            return parse_datetime_ms(raw)
        try:
            return float(raw)
        except ValueError:
            return None

    # -- writes ---------------------------------------------------------------------------------
    def check_properties(self, object_type: str, inputs: list[dict[str, Any]]) -> None:
        """Raise the 400 VALIDATION_ERROR HubSpot gives for unknown, read-only or bad enum values."""
        known = self.properties[object_type]
        problems: list[dict[str, Any]] = []
        for item in inputs:
            for name, value in (item.get("properties") or {}).items():
                problem = self._property_problem(known.get(name), name, value)
                if problem:
                    problems.append(problem)
        if problems:
            detail = ",".join(
                '{"isValid":false,"message":"%s","error":"%s","name":"%s"}'
                % (p["message"].replace('"', '\\"'), p["code"], p["context"]["propertyName"][0]) for p in problems
            )
            raise _validation(f"Property values were not valid: [{detail}]", problems)

    def _property_problem(self, prop: dict[str, Any] | None, name: str, value: Any) -> dict[str, Any] | None:
        def problem(code: str, message: str) -> dict[str, Any]:
            return {"message": message, "code": code, "context": {"propertyName": [name]}}

        if prop is None:
            return problem("PROPERTY_DOESNT_EXIST", f'Property "{name}" does not exist')
        if prop["modificationMetadata"]["readOnlyValue"] or name in VIRTUAL_MODIFIED | VIRTUAL_CREATED:
            return problem("READ_ONLY_VALUE", f'"{name}" is a read only property; its value cannot be set.')
        if value is None or value == "":
            return None
        text = str(value)
        if prop["type"] == "enumeration" and prop["options"]:
            allowed = {option["value"] for option in prop["options"]}
            parts = text.split(";") if prop["fieldType"] == "checkbox" else [text]
            bad = [part for part in parts if part not in allowed]
            if bad:
                return problem("INVALID_OPTION", f"{bad[0]} was not one of the allowed options: "
                               + ", ".join(f"<{option['value']}>" for option in prop["options"]))
        if prop["type"] == "number":
            try:
                float(text)
            except ValueError:
                return problem("INVALID_INTEGER", f"{text} is not a valid number for {name}")
        if prop["type"] in ("datetime", "date") and parse_datetime_ms(text) is None:
            return problem("INVALID_DATE", f"{text} is not a valid date for {name}")
        return None

    def unique_holder(self, object_type: str, name: str, value: Any, other_than: str | None = None) -> str | None:
        """The id of a record (not ``other_than``) that holds ``value`` in unique property ``name``."""
        if value is None or value == "":
            return None
        holders = self.tables[object_type].lookup(name, str(value).lower(), _lower) - {other_than}
        return min(holders, key=int) if holders else None

    def check_unique(self, object_type: str, writes: list[tuple[str | None, dict[str, Any]]]) -> None:
        """Raise the 400 VALIDATION_ERROR for a value of a unique property (``hasUniqueValue``) that
        another record holds, or that two writes of one request would both set; ``writes`` is
        ``(record id or None for a new record, properties)``."""
        unique = {name for name, prop in self.properties[object_type].items() if prop.get("hasUniqueValue")}
        claimed: dict[tuple[str, str], str | None] = {}
        problems = []
        for record_id, properties in writes:
            for name in unique & set(properties):
                value = properties[name]
                if value is None or value == "":
                    continue
                slot = (name, str(value).lower())
                holder = self.unique_holder(object_type, name, value, record_id)
                if holder is None and slot in claimed and claimed[slot] != record_id:
                    holder = claimed[slot] or "(another input of this request)"
                claimed.setdefault(slot, record_id)
                if holder is not None:
                    problems.append({"message": f"{name}: already has that value (on {SINGULAR[object_type]} {holder})",
                                     "code": "INVALID_UNIQUE_VALUE", "context": {"propertyName": [name]}})
        if problems:
            detail = ",".join('{"isValid":false,"message":"%s","error":"%s","name":"%s"}'
                              % (p["message"], p["code"], p["context"]["propertyName"][0]) for p in problems)
            raise _validation(f"Property values were not valid: [{detail}]", problems)

    def stored(self, object_type: str, name: str, value: Any) -> Any:
        """The stored form of a written value: None clears; datetimes become epoch ms."""
        if value is None or value == "":
            return None
        prop = self.properties[object_type].get(name)
        if prop and prop["type"] in ("datetime", "date"):
            return parse_datetime_ms(str(value))
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    def write(self, object_type: str, record_id: str, properties: dict[str, Any]) -> None:
        changes = {name: self.stored(object_type, name, value) for name, value in properties.items()}
        if object_type == "contacts" and self._lifecycle_backward(record_id, changes.get("lifecyclestage")):
            del changes["lifecyclestage"]  # as HubSpot: the request succeeds, the later stage stays
        self.tables[object_type].update(record_id, changes, now_ms())

    def _lifecycle_backward(self, record_id: str, new: Any) -> bool:
        """HubSpot's lifecycle stage moves only forward through the API: a set to an earlier stage
        (options in display order) is ignored unless the stage was cleared first; a clear always lands."""
        current = self.tables["contacts"].records[record_id].get("lifecyclestage")
        if new is None or current is None or new == current:
            return False
        prop = self.properties["contacts"].get("lifecyclestage") or {}
        order = [o["value"] for o in sorted(prop.get("options") or [], key=lambda o: o.get("displayOrder", 0))]
        return new in order and current in order and order.index(new) < order.index(current)

    def create(self, object_type: str, properties: dict[str, Any], record_id: str | None = None) -> str:
        record_id = record_id or self.next_id(object_type)
        record = {}
        for name, value in properties.items():
            stored = self.stored(object_type, name, value)
            if stored is not None:
                record[name] = stored
        stamp = now_ms()
        self.tables[object_type].insert(record_id, record, stamp, stamp)
        return record_id


# ---- request handling ----------------------------------------------------------------------------


class HubSpotApi:
    """Route handlers over one ``HubSpotPortal``; faults and auth are applied by the app."""

    def __init__(self, portal: HubSpotPortal, record_errors: Callable[[str, list[str]], dict[str, tuple[str, str | None]]]):
        self.portal = portal
        self.record_errors = record_errors

    def routes(self) -> list[tuple[str, str, str, Callable[[Ctx], Response]]]:
        """``(method, path, endpoint name, handler)``; object routes exist per object type."""
        out: list[tuple[str, str, str, Callable[[Ctx], Response]]] = []
        for obj in OBJECT_TYPES:
            base = f"/crm/v3/objects/{obj}"
            bind = lambda fn, o=obj: (lambda ctx: fn(ctx, o))  # noqa: E731
            out += [
                ("GET", base, f"hubspot.{obj}.list", bind(self.list_objects)),
                ("POST", base, f"hubspot.{obj}.create", bind(self.create_object)),
                ("POST", f"{base}/search", f"hubspot.{obj}.search", bind(self.search)),
                ("POST", f"{base}/batch/read", f"hubspot.{obj}.batch_read", bind(self.batch_read)),
                ("POST", f"{base}/batch/update", f"hubspot.{obj}.batch_update", bind(self.batch_update)),
                ("POST", f"{base}/batch/create", f"hubspot.{obj}.batch_create", bind(self.batch_create)),
                ("POST", f"{base}/batch/upsert", f"hubspot.{obj}.batch_upsert", bind(self.batch_upsert)),
                ("GET", base + "/{objectId}", f"hubspot.{obj}.get", bind(self.get_object)),
                ("PATCH", base + "/{objectId}", f"hubspot.{obj}.update", bind(self.update_object)),
            ]
        out += [
            ("GET", "/crm/v3/properties/{objectType}", "hubspot.properties.list", self.list_properties),
            ("POST", "/crm/v3/properties/{objectType}", "hubspot.properties.create", self.create_property),
            ("POST", "/crm/v3/properties/{objectType}/batch/read", "hubspot.properties.batch_read",
             self.batch_read_properties),
            ("POST", "/crm/v3/properties/{objectType}/batch/create", "hubspot.properties.batch_create",
             self.batch_create_properties),
            ("GET", "/crm/v3/properties/{objectType}/groups", "hubspot.property_groups.list", self.list_groups),
            ("POST", "/crm/v3/properties/{objectType}/groups", "hubspot.property_groups.create", self.create_group),
            ("GET", "/crm/v3/properties/{objectType}/groups/{groupName}", "hubspot.property_groups.get",
             self.get_group),
            ("GET", "/crm/v3/properties/{objectType}/{propertyName}", "hubspot.properties.get", self.get_property),
            ("GET", "/crm/v4/objects/{objectType}/{objectId}/associations/{toObjectType}",
             "hubspot.associations.list", self.list_associations),
            ("PUT", "/crm/v4/objects/{objectType}/{objectId}/associations/default/{toObjectType}/{toObjectId}",
             "hubspot.associations.create_default", self.create_default_association),
            ("POST", "/crm/v4/associations/{fromObjectType}/{toObjectType}/batch/read",
             "hubspot.associations.batch_read", self.batch_read_associations),
            ("POST", "/crm/v4/associations/{fromObjectType}/{toObjectType}/batch/create",
             "hubspot.associations.batch_create", self.batch_create_associations),
        ]
        return out

    # -- helpers --------------------------------------------------------------------------------
    def _body(self, ctx: Ctx) -> dict[str, Any]:
        try:
            body = ctx.json()
        except BadJson as exc:
            raise _validation(f"Invalid input JSON on line 1: {exc}") from None
        if not isinstance(body, dict):
            raise _validation("Invalid input JSON: expected an object")
        return body

    def _object_type(self, raw: str) -> str:
        name = TYPE_IDS.get(raw, raw)
        if name not in OBJECT_TYPES:
            raise HubSpotError(400, f"Unable to infer object type from: {raw}", "VALIDATION_ERROR")
        return name

    def _inputs(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        inputs = body.get("inputs")
        if not isinstance(inputs, list):
            raise _validation("Invalid input JSON: 'inputs' is required")
        if len(inputs) > BATCH_LIMIT:
            raise _validation(f"Batch input limit exceeded: {len(inputs)} inputs given, the limit is {BATCH_LIMIT}")
        return inputs

    def _batch_body(self, results: list[dict[str, Any]], errors: list[dict[str, Any]], started: int,
                    status_ok: int = 200) -> Response:
        body: dict[str, Any] = {"status": "COMPLETE", "results": results}
        if errors:
            body["numErrors"] = len(errors)
            body["errors"] = errors
        body["startedAt"] = iso_z(started)
        body["completedAt"] = iso_z(now_ms())
        return json_response(body, 207 if errors else status_ok)

    @staticmethod
    def _record_error(category: str, message: str, ids: list[str], sub: str | None = None) -> dict[str, Any]:
        error: dict[str, Any] = {"status": "error", "category": category, "message": message,
                                 "context": {"ids": ids}, "errors": [], "links": {}}
        if sub:
            error["subCategory"] = sub
        return error

    def _requested_properties(self, raw: Any) -> list[str] | None:
        if raw is None:
            return None
        if isinstance(raw, str):
            return [name for name in raw.split(",") if name]
        return [str(name) for name in raw]

    # -- objects --------------------------------------------------------------------------------
    def list_objects(self, ctx: Ctx, obj: str) -> Response:
        limit = _int_param(ctx.query.get("limit"), 10)
        if limit > LIST_MAX_LIMIT or limit < 1:
            raise _validation(f"limit must be between 1 and {LIST_MAX_LIMIT}, got {limit}")
        after = ctx.query.get("after")
        names = ctx.query.getlist("properties")
        props = [n for raw in names for n in raw.split(",") if n] if names else None
        associations = [n for raw in ctx.query.getlist("associations") for n in raw.split(",") if n]
        table = self.portal.tables[obj]
        ids_iter = table.ids_from(int(after), True) if after and after.isdigit() else (
            entry[1] for entry in table.ids_in_order())
        page = list(itertools.islice(ids_iter, limit + 1))
        results = [self._with_associations(obj, record_id, props, associations) for record_id in page[:limit]]
        body: dict[str, Any] = {"results": results}
        if len(page) > limit:
            nxt = page[limit]
            body["paging"] = {"next": {"after": nxt, "link": _next_link(ctx, nxt)}}
        return json_response(body)

    def _with_associations(self, obj: str, record_id: str, props: list[str] | None,
                           associations: list[str]) -> dict[str, Any]:
        out = self.portal.render(obj, record_id, props)
        assoc: dict[str, Any] = {}
        for raw in associations:
            to_type = TYPE_IDS.get(raw, raw)
            if (obj, to_type) not in ASSOCIATION_TYPES:
                continue
            linked = self.portal.associated(obj, record_id, to_type)
            rows = [{"id": to_id, "type": ASSOCIATION_NAMES[type_id]}
                    for to_id, types in linked.items() for type_id in types]
            if rows:
                assoc[to_type] = {"results": rows}
        if assoc:
            out["associations"] = assoc
        return out

    def get_object(self, ctx: Ctx, obj: str) -> Response:
        record_id = self._resolve_id(obj, ctx.params["objectId"], ctx.query.get("idProperty"))
        if record_id is None:
            raise HubSpotError(404, "Object not found.  objectId are usually numeric.", "OBJECT_NOT_FOUND")
        raw = ctx.query.getlist("properties")
        props = [n for item in raw for n in item.split(",") if n] if raw else None
        associations = [n for raw in ctx.query.getlist("associations") for n in raw.split(",") if n]
        return json_response(self._with_associations(obj, record_id, props, associations))

    def _resolve_id(self, obj: str, raw: str, id_property: str | None) -> str | None:
        table = self.portal.tables[obj]
        if not id_property or id_property == "hs_object_id":
            return raw if raw in table else None
        matches = table.lookup(id_property, raw.lower(), _lower)
        return min(matches, key=int) if matches else None

    def update_object(self, ctx: Ctx, obj: str) -> Response:
        body = self._body(ctx)
        record_id = self._resolve_id(obj, ctx.params["objectId"], ctx.query.get("idProperty"))
        if record_id is None:
            raise HubSpotError(404, "Object not found.  objectId are usually numeric.", "OBJECT_NOT_FOUND")
        properties = body.get("properties") or {}
        self.portal.check_properties(obj, [{"properties": properties}])
        self.portal.check_unique(obj, [(record_id, properties)])
        self.portal.write(obj, record_id, properties)
        return json_response(self.portal.render(obj, record_id, list(properties)))

    def create_object(self, ctx: Ctx, obj: str) -> Response:
        body = self._body(ctx)
        record_id = self._create_one(obj, body)
        return json_response(self.portal.render(obj, record_id, list(body.get("properties") or {})), 201)

    def _create_one(self, obj: str, item: dict[str, Any]) -> str:
        properties = item.get("properties") or {}
        self._check_create(obj, [item])
        record_id = self.portal.create(obj, properties)
        for association in item.get("associations") or []:
            to_id = str((association.get("to") or {}).get("id"))
            for spec in association.get("types") or []:
                to_type = self._association_target(obj, int(spec.get("associationTypeId", 0)))
                self.portal.associate(obj, record_id, to_type, to_id, int(spec["associationTypeId"]))
                if obj in ACTIVITY_TYPES + ("deals",) and to_type == "contacts":
                    self.portal.tables["contacts"].touch(to_id, now_ms())  # its Last Contacted / deal count
        return record_id

    def _association_target(self, obj: str, type_id: int) -> str:
        for (from_type, to_type), (primary, unlabeled, _) in ASSOCIATION_TYPES.items():
            if from_type == obj and type_id in (primary, unlabeled):
                return to_type
        raise _validation(f"{type_id} is not a valid association type id from {obj}")

    def _check_create(self, obj: str, items: list[dict[str, Any]]) -> None:
        self.portal.check_properties(obj, items)
        self.portal.check_unique(obj, [(None, item.get("properties") or {}) for item in items])
        for item in items:
            properties = item.get("properties") or {}
            email = str(properties.get("email") or "").strip().lower()
            if obj == "contacts" and email:
                existing = self.portal.tables["contacts"].lookup("email", email, _lower)
                if existing:
                    raise HubSpotError(409, f"Contact already exists. Existing ID: {min(existing, key=int)}",
                                       "CONFLICT")
            if obj == "tasks" and not properties.get("hs_timestamp"):
                raise _validation(
                    "Property values were not valid: [{\"isValid\":false,\"message\":\"hs_timestamp is required\","
                    "\"error\":\"REQUIRED_PROPERTY\",\"name\":\"hs_timestamp\"}]",
                    [{"message": "hs_timestamp is required", "code": "REQUIRED_PROPERTY",
                      "context": {"propertyName": ["hs_timestamp"]}}],
                )
            for association in item.get("associations") or []:
                to_id = str((association.get("to") or {}).get("id"))
                for spec in association.get("types") or []:
                    to_type = self._association_target(obj, int(spec.get("associationTypeId", 0)))
                    if to_id not in self.portal.tables[to_type]:
                        raise _validation(f"One or more associations are invalid: {to_type} {to_id} does not exist",
                                          [{"message": f"{SINGULAR[to_type]} {to_id} not found",
                                            "code": "INVALID_ASSOCIATION",
                                            "context": {"id": [to_id]}}])

    def batch_create(self, ctx: Ctx, obj: str) -> Response:
        started = now_ms()
        inputs = self._inputs(self._body(ctx))
        self._check_create(obj, inputs)
        trace_ids = [str(item.get("objectWriteTraceId")) for item in inputs if item.get("objectWriteTraceId")]
        failing = self.record_errors(ctx.endpoint, trace_ids) if len(set(trace_ids)) == len(inputs) else {}
        results, errors = [], []
        for item in inputs:
            trace = item.get("objectWriteTraceId")
            if trace is not None and str(trace) in failing:
                code, message = failing[str(trace)]
                error = self._record_error(code, message or "Injected failure", [])
                error["context"] = {"objectWriteTraceId": [str(trace)]}
                errors.append(error)
                continue
            record_id = self._create_one(obj, item)
            rendered = self.portal.render(obj, record_id, list(item.get("properties") or {}))
            if trace is not None:
                rendered["objectWriteTraceId"] = str(trace)
            results.append(rendered)
        return self._batch_body(results, errors, started, 201)

    def batch_read(self, ctx: Ctx, obj: str) -> Response:
        started = now_ms()
        body = self._body(ctx)
        inputs = self._inputs(body)
        props = self._requested_properties(body.get("properties")) or None
        id_property = body.get("idProperty")
        results, missing = [], []
        for item in inputs:
            raw = str(item.get("id"))
            record_id = self._resolve_id(obj, raw, id_property)
            if record_id is None:
                missing.append(raw)
            else:
                results.append(self.portal.render(obj, record_id, props))
        errors = []
        if missing:
            errors.append(self._record_error(
                "OBJECT_NOT_FOUND",
                f"Could not get some {SINGULAR[obj].upper()} objects, they may be deleted or not exist. "
                "Check that ids are valid.", missing))
        return self._batch_body(results, errors, started)

    def batch_update(self, ctx: Ctx, obj: str) -> Response:
        started = now_ms()
        inputs = self._inputs(self._body(ctx))
        raw_ids = [str(item.get("id")) for item in inputs]
        duplicates = sorted({i for i in raw_ids if raw_ids.count(i) > 1})
        if duplicates:
            raise _validation(f"Duplicate IDs found in batch input: [{', '.join(duplicates)}]. IDs must be unique")
        self.portal.check_properties(obj, inputs)
        self.portal.check_unique(obj, [(self._resolve_id(obj, raw, item.get("idProperty")), item.get("properties") or {})
                                       for item, raw in zip(inputs, raw_ids)])
        injected = self.record_errors(ctx.endpoint, raw_ids)
        results, missing = [], []
        failed: dict[tuple[str, str], list[str]] = {}
        for item, raw in zip(inputs, raw_ids):
            record_id = self._resolve_id(obj, raw, item.get("idProperty"))
            if record_id is None:
                missing.append(raw)
                continue
            if raw in injected:
                code, message = injected[raw]
                failed.setdefault((code, message or f"Injected {code} for {SINGULAR[obj]} {raw}"), []).append(raw)
                continue
            properties = item.get("properties") or {}
            self.portal.write(obj, record_id, properties)
            results.append(self.portal.render(obj, record_id, list(properties)))
        errors = [self._record_error(code, message, ids) for (code, message), ids in failed.items()]
        if missing:
            errors.append(self._record_error(
                "OBJECT_NOT_FOUND", f"Could not get some {SINGULAR[obj].upper()} objects, they may be deleted or "
                "not exist. Check that ids are valid.", missing))
        return self._batch_body(results, errors, started)

    def batch_upsert(self, ctx: Ctx, obj: str) -> Response:
        """Create or update by a unique property: each input's ``id`` is the value of its
        ``idProperty`` (or the ``idProperty`` query parameter), which must have ``hasUniqueValue``.
        A record holding the value is updated (``new: false``), else one is created with it
        (``new: true``); two inputs with one value reject the batch."""
        started = now_ms()
        inputs = self._inputs(self._body(ctx))
        id_props = [self._upsert_property(obj, item.get("idProperty") or ctx.query.get("idProperty")) for item in inputs]
        raw_ids = [str(item.get("id") or "") for item in inputs]
        duplicates = sorted({i for i in raw_ids if raw_ids.count(i) > 1})
        if duplicates:
            raise _validation(f"Duplicate IDs found in batch input: [{', '.join(duplicates)}]. IDs must be unique")
        if "" in raw_ids:
            raise _validation("Each upsert input needs an id: the value of its idProperty")
        existing = [self._resolve_id(obj, raw, prop) for raw, prop in zip(raw_ids, id_props)]
        writes = [dict(item.get("properties") or {}, **({} if found else {prop: raw}))
                  for item, raw, prop, found in zip(inputs, raw_ids, id_props, existing)]
        self.portal.check_properties(obj, [{"properties": w} for w in writes])
        self._check_create(obj, [dict(item, properties=w) for item, w, found in zip(inputs, writes, existing)
                                 if found is None])
        self.portal.check_unique(obj, [(found, w) for found, w in zip(existing, writes) if found is not None])
        injected = self.record_errors(ctx.endpoint, raw_ids)
        results, errors = [], []
        for item, raw, write, found in zip(inputs, raw_ids, writes, existing):
            trace = item.get("objectWriteTraceId")
            if raw in injected:
                code, message = injected[raw]
                error = self._record_error(code, message or f"Injected {code} for {SINGULAR[obj]} {raw}", [raw])
                if trace is not None:
                    error["context"]["objectWriteTraceId"] = [str(trace)]
                errors.append(error)
                continue
            if found is None:
                record_id = self.portal.create(obj, write)
            else:
                record_id = found
                self.portal.write(obj, record_id, write)
            rendered = dict(self.portal.render(obj, record_id, list(write)), new=found is None)
            if trace is not None:
                rendered["objectWriteTraceId"] = str(trace)
            results.append(rendered)
        return self._batch_body(results, errors, started)

    def _upsert_property(self, obj: str, name: Any) -> str:
        prop = self.portal.properties[obj].get(str(name or ""))
        if prop is None:
            raise _validation(f"Property {name!r} does not exist on {obj}: an upsert needs a unique idProperty")
        if not prop.get("hasUniqueValue"):
            raise _validation(f"Unable to perform update/upsert by non-unique {_TYPE_ID[obj]} property {prop['name']} "
                              f"in portal ID {self.portal.portal_id}")
        return prop["name"]

    # -- search ---------------------------------------------------------------------------------
    def search(self, ctx: Ctx, obj: str) -> Response:
        body = self._body(ctx)
        if len(ctx.body_bytes) > 3000 and body.get("query"):
            raise _validation("The query is too long: the maximum is 3000 characters")
        limit = _int_param(body.get("limit"), 10)
        if limit > SEARCH_MAX_LIMIT or limit < 0:
            raise _validation(f"Search limit must be between 0 and {SEARCH_MAX_LIMIT}, got {limit}")
        after = _int_param(body.get("after"), 0)
        if after >= SEARCH_RESULT_CAP:
            raise _validation(
                f"Paging beyond {SEARCH_RESULT_CAP} results is not supported: after={after}. "
                "Narrow the search with filters and start again from the first page.",
                [{"message": f"after must be less than {SEARCH_RESULT_CAP}", "code": "INVALID_PAGING",
                  "context": {"after": [str(after)]}}],
            )
        groups = self._filter_groups(obj, body.get("filterGroups") or [])
        sort_prop, descending = self._sort(obj, body.get("sorts") or [])
        ordered = self._search_ids(obj, groups, sort_prop, descending)
        text = str(body.get("query") or "").strip().lower()
        if text:
            ordered = [i for i in ordered if self._text_match(obj, i, text)]
        total = len(ordered)
        stop = min(after + limit, total, SEARCH_RESULT_CAP)
        props = self._requested_properties(body.get("properties")) or None
        results = [self.portal.render(obj, record_id, props) for record_id in ordered[after:stop]]
        out: dict[str, Any] = {"total": total, "results": results}
        if stop < total and limit:
            out["paging"] = {"next": {"after": str(stop), "link": f"?after={stop}"}}
        return json_response(out)

    def _text_match(self, obj: str, record_id: str, text: str) -> bool:
        """The free-text ``query``: a token prefix in the object's default searchable properties."""
        record = self.portal.tables[obj].records[record_id]
        tokens = text.replace("*", "").split()
        haystack = " ".join(str(record.get(name, "")) for name in SEARCHABLE[obj]).lower()
        words = haystack.replace("@", " ").replace(".", " ").split() + haystack.split()
        return all(any(word.startswith(token) for word in words) for token in tokens)

    def _filter_groups(self, obj: str, raw_groups: Any) -> list[list[dict[str, Any]]]:
        if not isinstance(raw_groups, list):
            raise _validation("filterGroups must be a list")
        if len(raw_groups) > 5:
            raise _validation(f"Too many filter groups: {len(raw_groups)}; the maximum is 5")
        total = 0
        groups = []
        known = self.portal.properties[obj]
        for group in raw_groups:
            filters = list((group or {}).get("filters") or [])
            if len(filters) > 6:
                raise _validation(f"Too many filters in a filter group: {len(filters)}; the maximum is 6")
            total += len(filters)
            for item in filters:
                name, operator = item.get("propertyName"), item.get("operator", "EQ")
                if operator not in FILTER_OPERATORS:
                    raise _validation(f"Unknown operator {operator!r}")
                if not name or (name not in known and not str(name).startswith("associations.")):
                    raise _validation(
                        f"There was a problem with the request: property {name!r} does not exist on {obj}",
                        [{"message": f'Property "{name}" does not exist', "code": "PROPERTY_DOESNT_EXIST",
                          "context": {"propertyName": [str(name)]}}])
                if operator in ("IN", "NOT_IN") and not isinstance(item.get("values"), list):
                    raise _validation(f"{operator} filters need 'values' (a list)")
            groups.append(filters)
        if total > 18:
            raise _validation(f"Too many filters: {total}; the maximum is 18")
        return groups

    def _sort(self, obj: str, sorts: list[Any]) -> tuple[str | None, bool]:
        if len(sorts) > 1:
            raise _validation("Only one sort is allowed per search")
        if not sorts:
            return None, False
        sort = sorts[0]
        if isinstance(sort, str):
            name, descending = sort.lstrip("-"), sort.startswith("-")
        else:
            name, descending = sort.get("propertyName"), str(sort.get("direction", "ASCENDING")).upper() == "DESCENDING"
        if name not in self.portal.properties[obj]:
            raise _validation(f"Cannot sort by unknown property {name!r}")
        return name, descending

    def _search_ids(self, obj: str, groups: list[list[dict[str, Any]]], sort_prop: str | None,
                    descending: bool) -> list[str] | IdColumn:
        wanted_order = "mod" if sort_prop in VIRTUAL_MODIFIED else "id" if sort_prop in (None, "hs_object_id") else None
        if len(groups) <= 1:
            filters = groups[0] if groups else []
            ordered, applied, order = self._group_candidates(obj, filters, prefer_mod=wanted_order == "mod")
            residual = [f for f in filters if id(f) not in applied]
            ids = [i for i in ordered if self._matches(obj, i, residual)] if residual else ordered
            if order == wanted_order:
                if isinstance(ids, IdColumn):
                    return ids.reversed() if descending else ids
                return ids[::-1] if descending else ids
            return self._sorted(obj, list(ids), sort_prop, descending)
        found: set[str] = set()
        for filters in groups:
            ordered, applied, _ = self._group_candidates(obj, filters, prefer_mod=False)
            residual = [f for f in filters if id(f) not in applied]
            found.update(i for i in ordered if self._matches(obj, i, residual))  # type: ignore[union-attr]
        return self._sorted(obj, list(found), sort_prop, descending)

    def _group_candidates(self, obj: str, filters: list[dict[str, Any]],
                          prefer_mod: bool) -> tuple[list[str] | IdColumn, set[int], str]:
        """Candidate ids for one AND-group from an index, the ``id()`` of the filters the index
        already applied, and the candidates' order: "mod" (modified, id) or "id"."""
        table = self.portal.tables[obj]
        known = self.portal.properties[obj]
        equality = [f for f in filters if f.get("operator", "EQ") in ("EQ", "IN")
                    and f["propertyName"] in known
                    and f["propertyName"] not in VIRTUAL_MODIFIED | VIRTUAL_CREATED | {"hs_object_id"}
                    and known[f["propertyName"]]["type"] in ("string", "enumeration", "bool")]
        ranges = [f for f in filters if f["propertyName"] in VIRTUAL_MODIFIED
                  and f.get("operator") in ("GT", "GTE", "LT", "LTE", "BETWEEN")]
        moments = [f for f in filters if f.get("operator", "EQ") == "EQ" and f["propertyName"] in known
                   and f["propertyName"] not in VIRTUAL_MODIFIED | VIRTUAL_CREATED
                   and known[f["propertyName"]]["type"] in ("datetime", "date") and _ms(f.get("value")) is not None]
        if moments and not equality and not (prefer_mod and ranges):  # a datetime EQ (a write fence's stamp)
            chosen = moments[0]
            ids = table.lookup(chosen["propertyName"], _ms(chosen.get("value")), _moment)
            return sorted(ids, key=int), {id(chosen)}, "id"
        if equality and not (prefer_mod and ranges):
            chosen = equality[0]
            is_in = chosen.get("operator") == "IN"
            string = known[chosen["propertyName"]]["type"] == "string"
            normalize = _lower if string else _plain
            values = chosen.get("values") if is_in else [chosen.get("value")]
            ids: set[str] = set()
            for value in values or []:
                if value is not None:
                    key = str(value).lower() if string and not is_in else str(value)
                    ids |= table.lookup(chosen["propertyName"], key, normalize)
            return sorted(ids, key=int), {id(chosen)}, "id"
        if ranges:
            low, low_inc, high, high_inc = None, True, None, False
            for f in ranges:
                op, value = f["operator"], _ms(f.get("value"))
                if op == "BETWEEN":
                    low, low_inc, high, high_inc = value, True, _ms(f.get("highValue")), True
                elif op in ("GT", "GTE") and value is not None and (low is None or value >= low):
                    low, low_inc = value, op == "GTE"
                elif op in ("LT", "LTE") and value is not None and (high is None or value <= high):
                    high, high_inc = value, op == "LTE"
            entries = table.by_modified(low, low_inc, high, high_inc)
            return IdColumn(entries, 2), {id(f) for f in ranges}, "mod"
        id_ranges = [f for f in filters if f["propertyName"] == "hs_object_id"
                     and f.get("operator") in ("GT", "GTE", "LT", "LTE") and _float(f.get("value")) is not None]
        if id_ranges:
            low, low_inc, high, high_inc = None, True, None, True
            for f in id_ranges:
                op, value = f["operator"], _float(f["value"])
                if op in ("GT", "GTE") and (low is None or value >= low):
                    low, low_inc = value, op == "GTE"
                elif op in ("LT", "LTE") and (high is None or value <= high):
                    high, high_inc = value, op == "LTE"
            return IdColumn(table.by_key(low, low_inc, high, high_inc), 1), {id(f) for f in id_ranges}, "id"
        return IdColumn(table.ids_in_order(), 1), set(), "id"

    def _matches(self, obj: str, record_id: str, filters: list[dict[str, Any]]) -> bool:
        return all(self._match_one(obj, record_id, f) for f in filters)

    def _match_one(self, obj: str, record_id: str, f: dict[str, Any]) -> bool:
        name, operator = f["propertyName"], f.get("operator", "EQ")
        if name.startswith("associations."):
            to_type = TYPE_IDS.get(name.split(".", 1)[1], name.split(".", 1)[1])
            linked = set(self.portal.associated(obj, record_id, to_type))
            wanted = {str(v) for v in (f.get("values") or [f.get("value")])}
            hit = bool(linked & wanted)
            return hit if operator in ("EQ", "IN") else not hit
        prop = self.portal.properties[obj][name]
        record = self.portal.tables[obj].records[record_id]
        if operator == "HAS_PROPERTY":
            return self.portal.value(obj, record_id, record, name) not in (None, "")
        if operator == "NOT_HAS_PROPERTY":
            return self.portal.value(obj, record_id, record, name) in (None, "")
        if prop["type"] in ("number", "datetime", "date") or name in VIRTUAL_MODIFIED | VIRTUAL_CREATED:
            return _compare_number(self.portal.numeric(obj, record_id, name), f, prop["type"] != "number")
        value = self.portal.value(obj, record_id, record, name)
        return _compare_text(value, f, case_sensitive=prop["type"] == "enumeration")

    def _sorted(self, obj: str, ids: list[str], sort_prop: str | None, descending: bool) -> list[str]:
        if sort_prop is None or sort_prop == "hs_object_id":
            return sorted(ids, key=int, reverse=descending)
        table = self.portal.tables[obj]
        if sort_prop in VIRTUAL_MODIFIED:
            return sorted(ids, key=lambda i: (table.modified[i], int(i)), reverse=descending)
        if sort_prop in VIRTUAL_CREATED:
            return sorted(ids, key=lambda i: (table.created[i], int(i)), reverse=descending)
        prop = self.portal.properties[obj][sort_prop]
        if prop["type"] in ("number", "datetime", "date"):
            def key(i: str) -> tuple[int, float, int]:
                value = self.portal.numeric(obj, i, sort_prop)
                return (value is None, value or 0.0, int(i))
        else:
            def key(i: str) -> tuple[int, str, int]:  # type: ignore[misc]
                value = self.portal.value(obj, i, table.records[i], sort_prop)
                return (value is None, (value or "").lower(), int(i))
        return sorted(ids, key=key, reverse=descending)

    # -- properties -----------------------------------------------------------------------------
    def list_properties(self, ctx: Ctx) -> Response:
        obj = self._object_type(ctx.params["objectType"])
        return json_response({"results": list(self.portal.properties[obj].values())})

    def get_property(self, ctx: Ctx) -> Response:
        obj = self._object_type(ctx.params["objectType"])
        prop = self.portal.properties[obj].get(ctx.params["propertyName"])
        if prop is None:
            raise HubSpotError(404, f"Unable to find property {ctx.params['propertyName']} on object type {obj}",
                               "OBJECT_NOT_FOUND")
        return json_response(prop)

    def create_property(self, ctx: Ctx) -> Response:
        obj = self._object_type(ctx.params["objectType"])
        prop = self._new_property(obj, self._body(ctx))
        self.portal.properties[obj][prop["name"]] = prop
        return json_response(prop, 201)

    def _new_property(self, obj: str, body: dict[str, Any]) -> dict[str, Any]:
        missing = [key for key in ("name", "label", "type", "fieldType", "groupName") if not body.get(key)]
        if missing:
            raise _validation(f"Missing required fields: {', '.join(missing)}")
        name = body["name"]
        if name in self.portal.properties[obj]:
            raise HubSpotError(409, f"A property named '{name}' already exists.", "OBJECT_ALREADY_EXISTS",
                               context={"name": [name]})
        if body["groupName"] not in self.portal.groups[obj]:
            raise _validation(f"Property group {body['groupName']} does not exist.")
        if body["type"] == "enumeration" and not body.get("options") and body["fieldType"] != "booleancheckbox":
            raise _validation(f"Enumeration property {name} needs options")
        options = [(o["value"], o.get("label", o["value"])) for o in body.get("options") or []]
        if body["type"] == "bool" and not options:
            options = list(_BOOL_OPTIONS)
        prop = _prop(name, body["label"], body["type"], body["fieldType"], body["groupName"], options,
                     hubspot_defined=False)
        stamp = iso_z(now_ms())
        prop.update(createdAt=stamp, updatedAt=stamp, description=body.get("description", ""),
                    hasUniqueValue=bool(body.get("hasUniqueValue")), hidden=bool(body.get("hidden")),
                    formField=bool(body.get("formField", False)), displayOrder=body.get("displayOrder", -1))
        return prop

    def batch_read_properties(self, ctx: Ctx) -> Response:
        started = now_ms()
        obj = self._object_type(ctx.params["objectType"])
        names = [str(item.get("name")) for item in self._inputs(self._body(ctx))]
        found = [self.portal.properties[obj][n] for n in names if n in self.portal.properties[obj]]
        missing = [n for n in names if n not in self.portal.properties[obj]]
        errors = [self._record_error("OBJECT_NOT_FOUND", f"Unable to find property {n}", [n]) for n in missing]
        return self._batch_body(found, errors, started)

    def batch_create_properties(self, ctx: Ctx) -> Response:
        started = now_ms()
        obj = self._object_type(ctx.params["objectType"])
        results, errors = [], []
        for item in self._inputs(self._body(ctx)):
            try:
                prop = self._new_property(obj, item)
            except HubSpotError as exc:
                errors.append(dict(exc.body(), context={"name": [str(item.get("name"))]}))
                continue
            self.portal.properties[obj][prop["name"]] = prop
            results.append(prop)
        return self._batch_body(results, errors, started, 201)

    def list_groups(self, ctx: Ctx) -> Response:
        obj = self._object_type(ctx.params["objectType"])
        return json_response({"results": list(self.portal.groups[obj].values())})

    def get_group(self, ctx: Ctx) -> Response:
        obj = self._object_type(ctx.params["objectType"])
        group = self.portal.groups[obj].get(ctx.params["groupName"])
        if group is None:
            raise HubSpotError(404, f"Unable to find property group {ctx.params['groupName']}", "OBJECT_NOT_FOUND")
        return json_response(group)

    def create_group(self, ctx: Ctx) -> Response:
        obj = self._object_type(ctx.params["objectType"])
        body = self._body(ctx)
        if not body.get("name") or not body.get("label"):
            raise _validation("Missing required fields: name, label")
        if body["name"] in self.portal.groups[obj]:
            raise HubSpotError(409, f"A property group named '{body['name']}' already exists.",
                               "OBJECT_ALREADY_EXISTS")
        group = {"name": body["name"], "label": body["label"], "displayOrder": body.get("displayOrder", -1),
                 "archived": False}
        self.portal.groups[obj][group["name"]] = group
        return json_response(group, 201)

    # -- associations v4 ------------------------------------------------------------------------
    def _v4_rows(self, from_type: str, from_id: str, to_type: str) -> list[dict[str, Any]]:
        _, _, primary_label = ASSOCIATION_TYPES[(from_type, to_type)]
        primary = ASSOCIATION_TYPES[(from_type, to_type)][0]
        rows = []
        for to_id, types in self.portal.associated(from_type, from_id, to_type).items():
            rows.append({"toObjectId": int(to_id), "associationTypes": [
                {"category": "HUBSPOT_DEFINED", "typeId": t,
                 "label": primary_label if t == primary and ASSOCIATION_TYPES[(from_type, to_type)][1] else None}
                for t in types]})
        return rows

    def list_associations(self, ctx: Ctx) -> Response:
        from_type = self._object_type(ctx.params["objectType"])
        to_type = self._object_type(ctx.params["toObjectType"])
        return json_response({"results": self._v4_rows(from_type, ctx.params["objectId"], to_type)})

    def create_default_association(self, ctx: Ctx) -> Response:
        started = now_ms()
        from_type = self._object_type(ctx.params["objectType"])
        to_type = self._object_type(ctx.params["toObjectType"])
        from_id, to_id = ctx.params["objectId"], ctx.params["toObjectId"]
        for obj, record_id in ((from_type, from_id), (to_type, to_id)):
            if record_id not in self.portal.tables[obj]:
                raise HubSpotError(404, f"No {SINGULAR[obj]} with id {record_id} exists", "OBJECT_NOT_FOUND")
        type_id = ASSOCIATION_TYPES[(from_type, to_type)][1] or ASSOCIATION_TYPES[(from_type, to_type)][0]
        self.portal.associate(from_type, from_id, to_type, to_id, type_id)
        result = {"from": {"id": from_id}, "to": {"id": to_id},
                  "associationSpec": {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": type_id}}
        return self._batch_body([result], [], started)

    def batch_read_associations(self, ctx: Ctx) -> Response:
        started = now_ms()
        from_type = self._object_type(ctx.params["fromObjectType"])
        to_type = self._object_type(ctx.params["toObjectType"])
        results, errors = [], []
        for item in self._inputs(self._body(ctx)):
            from_id = str(item.get("id"))
            rows = self._v4_rows(from_type, from_id, to_type)
            if rows:
                results.append({"from": {"id": from_id}, "to": rows})
            else:
                errors.append({
                    "status": "error", "category": "OBJECT_NOT_FOUND",
                    "subCategory": "crm.associations.NO_ASSOCIATIONS_FOUND",
                    "context": {"fromObjectId": [from_id]},
                    "message": f"No {SINGULAR[to_type]} is associated with {SINGULAR[from_type]} {from_id}.",
                    "errors": [], "links": {},
                })
        return self._batch_body(results, errors, started)

    def batch_create_associations(self, ctx: Ctx) -> Response:
        """v4 batch create: each input links ``from`` to ``to`` with the given association types.
        Linking a pair that is already linked changes nothing (the call is idempotent)."""
        started = now_ms()
        from_type = self._object_type(ctx.params["fromObjectType"])
        to_type = self._object_type(ctx.params["toObjectType"])
        if (from_type, to_type) not in ASSOCIATION_TYPES:
            raise _validation(f"{SINGULAR[from_type]} to {SINGULAR[to_type]} associations are not supported")
        primary, unlabeled, _ = ASSOCIATION_TYPES[(from_type, to_type)]
        results, errors = [], []
        for item in self._inputs(self._body(ctx)):
            from_id = str((item.get("from") or {}).get("id"))
            to_id = str((item.get("to") or {}).get("id"))
            type_ids = [int(t.get("associationTypeId", 0)) for t in item.get("types") or []]
            problem = self._link_problem(from_type, from_id, to_type, to_id, type_ids, {primary, unlabeled})
            if problem:
                errors.append(problem)
                continue
            for type_id in type_ids:
                self.portal.associate(from_type, from_id, to_type, to_id, type_id)
            results.append({"fromObjectTypeId": _TYPE_ID[from_type], "fromObjectId": int(from_id),
                            "toObjectTypeId": _TYPE_ID[to_type], "toObjectId": int(to_id), "labels": []})
        return self._batch_body(results, errors, started, 201)

    def _link_problem(self, from_type: str, from_id: str, to_type: str, to_id: str, type_ids: list[int],
                      allowed: set[int | None]) -> dict[str, Any] | None:
        for obj, record_id in ((from_type, from_id), (to_type, to_id)):
            if record_id not in self.portal.tables[obj]:
                return {"status": "error", "category": "OBJECT_NOT_FOUND",
                        "message": f"No {SINGULAR[obj]} with id {record_id} exists",
                        "context": {"fromObjectId": [from_id], "toObjectId": [to_id]}, "errors": [], "links": {}}
        bad = [t for t in type_ids if t not in allowed] or ([] if type_ids else [0])
        if bad:
            return {"status": "error", "category": "VALIDATION_ERROR",
                    "message": f"{bad[0]} is not a valid association type from {SINGULAR[from_type]} to {SINGULAR[to_type]}",
                    "context": {"fromObjectId": [from_id], "toObjectId": [to_id]}, "errors": [], "links": {}}
        return None


_TYPE_ID = {"contacts": "0-1", "companies": "0-2", "tasks": "0-27"}


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _plain(value: Any) -> Any:
    return value


def _moment(value: Any) -> int | None:
    """A stored datetime value as epoch ms (the key of a datetime equality index)."""
    if value is None or value == "":
        return None
    return value if type(value) is int else parse_datetime_ms(str(value))


def _int_param(raw: Any, default: int) -> int:
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise _validation(f"Expected an integer, got {raw!r}") from None


def _ms(raw: Any) -> int | None:
    if raw is None:
        return None
    return parse_datetime_ms(str(raw))


def _compare_number(actual: float | None, f: dict[str, Any], is_time: bool) -> bool:
    operator = f.get("operator", "EQ")
    convert = _ms if is_time else _float
    if operator in ("IN", "NOT_IN"):
        values = {convert(v) for v in f.get("values") or []}
        return (actual in values) == (operator == "IN")
    if actual is None:
        return operator == "NEQ"
    value = convert(f.get("value"))
    if value is None:
        return False
    if operator == "EQ":
        return actual == value
    if operator == "NEQ":
        return actual != value
    if operator == "GT":
        return actual > value
    if operator == "GTE":
        return actual >= value
    if operator == "LT":
        return actual < value
    if operator == "LTE":
        return actual <= value
    if operator == "BETWEEN":
        high = convert(f.get("highValue"))
        return high is not None and value <= actual <= high
    return False


def _float(raw: Any) -> float | None:
    try:
        return float(raw)
    except (TypeError, ValueError):
        return None


def _compare_text(actual: str | None, f: dict[str, Any], case_sensitive: bool) -> bool:
    operator = f.get("operator", "EQ")
    fold = (lambda v: v) if case_sensitive else (lambda v: v.lower())
    if operator in ("IN", "NOT_IN"):
        values = {str(v) for v in f.get("values") or []}
        hit = actual is not None and fold(actual) in values
        return hit == (operator == "IN")
    if operator in ("CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN"):
        token = str(f.get("value", "")).lower().replace("*", "")
        hit = actual is not None and token in actual.lower()
        return hit == (operator == "CONTAINS_TOKEN")
    value = f.get("value")
    if operator == "NEQ":
        return actual is None or fold(actual) != fold(str(value))
    if actual is None or value is None:
        return False
    a, b = fold(actual), fold(str(value))
    return {"EQ": a == b, "GT": a > b, "GTE": a >= b, "LT": a < b, "LTE": a <= b}.get(operator, False)


def _next_link(ctx: Ctx, after: str) -> str:
    """HubSpot's ``paging.next.link`` of a list: the absolute URL of the same list request with the
    next ``after`` (e.g. ``https://api.hubapi.com/crm/v3/objects/contacts?after=102&limit=100``);
    the request's other query parameters (limit, properties, associations) are kept, so a client
    that follows the link gets the next page of the same list."""
    return str(ctx.request.url.include_query_params(after=after))
