"""Salesforce REST (v31.0+) as a stateful org: OAuth and SOAP login, SOQL query/queryMore,
describe, sObject Collections, single-record CRUD and limits.

Objects: Lead and Task, plus the activity and outcome objects leadflow reads - Event (meetings),
Campaign, CampaignMember (a lead's campaign responses) and Opportunity (a converted lead's).
Queries may hold semi-joins (``LeadId IN (SELECT Id FROM Lead WHERE ...)``) and name child-to-parent fields (``CampaignMember.Campaign.Type``,
``Lead.ConvertedOpportunity.StageName``; ``PARENTS``) - rendered nested as Salesforce does, null
when the lookup is empty - and parent-to-child subqueries of a lead (``Tasks``, ``Events``,
``CampaignMembers``; ``CHILDREN``), rendered ``{totalSize, done, records}`` or null when there are
none; child records count toward the query batch size, as in Salesforce. Bulk API 2.0 query jobs
refuse subqueries.

Field values are stored typed (str, float, bool; datetimes as epoch ms ints) and rendered as
Salesforce does (``2024-01-05T12:34:56.000+0000``). ``Id``, ``CreatedDate``,
``LastModifiedDate`` and ``SystemModstamp`` are kept by the table. Error bodies are JSON arrays
``[{"message", "errorCode", "fields"?}]``; every data response carries ``Sforce-Limit-Info``.

Users: the integration user (``USER_ID``, the sandbox credentials) and a sales rep (``REP``, its
own username and password, and the bearer token ``REP_SESSION_ID``). Every session remembers its
user; every record write through the API sets ``LastModifiedById`` (and ``CreatedById`` on
create) to it. Writes not made through the API (seed files, tests editing the tables) are a
person's: the rep's (``OrgTable``). ``GET /services/oauth2/userinfo`` names the session's user.
"""

from __future__ import annotations

import base64
import csv
import io
import itertools
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from html import escape, unescape
from typing import Any
from urllib.parse import parse_qs

from starlette.responses import Response

from mappings import CrmMapping
from sandbox import soql
from sandbox.http import BadJson, Ctx, json_response
from sandbox.store import IdColumn, Table, iso_sf, now_ms, parse_datetime_ms

ORG_ID = "00D5g000004SBXaEAO"
USER_ID = "0055g00000BxYZaAAN"  # the integration user (the sandbox credentials)
REP_USER_ID = "0055g00000BxYZbAAN"
REP_SESSION_ID = "sandbox-rep-session"
AUDIT_FIELDS = ("CreatedById", "LastModifiedById")
KEY_PREFIX = {"Lead": "00Q", "Task": "00T", "Event": "00U", "Campaign": "701", "CampaignMember": "00v",
              "Opportunity": "006"}
# (object, relationship name) -> (lookup field, parent object): child-to-parent paths
PARENTS = {("Lead", "ConvertedOpportunity"): ("ConvertedOpportunityId", "Opportunity"),
           ("CampaignMember", "Campaign"): ("CampaignId", "Campaign"),
           ("CampaignMember", "Lead"): ("LeadId", "Lead")}
# (object, child relationship name) -> (child object, the child's field naming the parent)
CHILDREN = {("Lead", "Tasks"): ("Task", "WhoId"), ("Lead", "Events"): ("Event", "WhoId"),
            ("Lead", "CampaignMembers"): ("CampaignMember", "LeadId")}
VIRTUAL = {"Id", "CreatedDate", "LastModifiedDate", "SystemModstamp"}
TEXT_TYPES = frozenset({"string", "picklist", "email", "url", "phone", "textarea", "combobox"})
QUERY_BATCH = 2000
COLLECTION_LIMIT = 200
DEFAULT_DAILY = 100_000
_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def sf_id(prefix: str, number: int) -> str:
    """An 18-character Salesforce id: key prefix, pod, base-62 counter, case-safe suffix."""
    digits = []
    for _ in range(9):
        number, rem = divmod(number, 62)
        digits.append(_B62[rem])
    base = prefix + "5g0" + "".join(reversed(digits))
    return base + soql.id_suffix(base)


def sf_error(status: int, code: str, message: str, fields: list[str] | None = None,
             headers: dict[str, str] | None = None) -> Response:
    item: dict[str, Any] = {"message": message, "errorCode": code}
    if fields is not None:
        item["fields"] = fields
    return json_response([item], status, headers)


class SalesforceError(Exception):
    def __init__(self, status: int, code: str, message: str, fields: list[str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.fields = status, code, message, fields


@dataclass(frozen=True)
class User:
    user_id: str
    username: str
    password: str
    name: str
    security_token: str = ""

    def accepts(self, password: str | None) -> bool:
        return password in (self.password, self.password + self.security_token)


REP = User(REP_USER_ID, "rep@leadflow.sandbox", "rep-sandbox", "Riley Rep")


def integration_user(credentials: Any) -> User:
    return User(USER_ID, credentials.username, credentials.password, "leadflow Integration",
                credentials.security_token)


# ---- schema -------------------------------------------------------------------------------------


@dataclass
class Field:
    name: str
    type: str
    label: str
    length: int = 0
    custom: bool = False
    updateable: bool = True
    createable: bool = True
    nillable: bool = True
    picklist: tuple[str, ...] = ()
    restricted: bool = False
    reference_to: tuple[str, ...] = ()
    external_id: bool = False
    unique: bool = False
    case_sensitive: bool = False  # of a unique field: "ABC" and "abc" are different values

    def describe(self) -> dict[str, Any]:
        soap = {"id": "tns:ID", "reference": "tns:ID", "boolean": "xsd:boolean", "double": "xsd:double",
                "currency": "xsd:double", "int": "xsd:int", "datetime": "xsd:dateTime", "date": "xsd:date"}.get(self.type, "xsd:string")
        return {
            "name": self.name, "label": self.label, "type": self.type, "length": self.length,
            "custom": self.custom, "nillable": self.nillable, "updateable": self.updateable,
            "createable": self.createable, "filterable": True, "sortable": self.type != "textarea" or self.length <= 255,
            "soapType": soap, "precision": 18 if self.type == "double" else 0, "scale": 0,
            "restrictedPicklist": self.restricted, "referenceTo": list(self.reference_to),
            "relationshipName": None, "calculated": False, "unique": self.unique, "externalId": self.external_id,
            "caseSensitive": self.case_sensitive, "idLookup": self.external_id or self.name == "Id",
            "defaultedOnCreate": self.type == "boolean" or self.name in VIRTUAL or self.name in AUDIT_FIELDS,
            "picklistValues": [{"active": True, "defaultValue": False, "label": value, "validFor": None,
                                "value": value} for value in self.picklist],
        }


def _std(name: str, type_: str, label: str, length: int = 0, **kw: Any) -> Field:
    return Field(name, type_, label, length, **kw)


def _system_fields() -> list[Field]:
    return [
        _std("Id", "id", "Record ID", 18, updateable=False, createable=False, nillable=False),
        _std("IsDeleted", "boolean", "Deleted", updateable=False, createable=False, nillable=False),
        _std("OwnerId", "reference", "Owner ID", 18, reference_to=("User",)),
        _std("CreatedById", "reference", "Created By ID", 18, updateable=False, createable=False, nillable=False,
             reference_to=("User",)),
        _std("CreatedDate", "datetime", "Created Date", updateable=False, createable=False, nillable=False),
        _std("LastModifiedById", "reference", "Last Modified By ID", 18, updateable=False, createable=False,
             nillable=False, reference_to=("User",)),
        _std("LastModifiedDate", "datetime", "Last Modified Date", updateable=False, createable=False, nillable=False),
        _std("SystemModstamp", "datetime", "System Modstamp", updateable=False, createable=False, nillable=False),
    ]


# The standard Lead/Account Industry picklist (unrestricted: admins add values).
INDUSTRIES = ("Agriculture", "Apparel", "Banking", "Biotechnology", "Chemicals", "Communications", "Construction",
              "Consulting", "Education", "Electronics", "Energy", "Engineering", "Entertainment", "Environmental",
              "Finance", "Food & Beverage", "Government", "Healthcare", "Hospitality", "Insurance", "Machinery",
              "Manufacturing", "Media", "Not For Profit", "Other", "Recreation", "Retail", "Shipping", "Technology",
              "Telecommunications", "Transportation", "Utilities")
# The org's Lead Status picklist: Salesforce's four defaults, then values its admin added (Setup >
# Object Manager > Lead > Fields > Lead Status), as many orgs have for marketing's stages.
LEAD_STATUSES = ("Open - Not Contacted", "Working - Contacted", "Closed - Converted", "Closed - Not Converted",
                 "Nurturing", "Marketing Qualified", "Unqualified")
TASK_STATUSES = ("Not Started", "In Progress", "Completed", "Waiting on someone else", "Deferred")
TASK_PRIORITIES = ("High", "Normal", "Low")
CAMPAIGN_TYPES = ("Advertisement", "Banner Ads", "Conference", "Direct Mail", "Email", "Partners",
                  "Public Relations", "Referral Program", "Telemarketing", "Trade Show", "Webinar", "Other")
MEMBER_STATUSES = ("Planned", "Sent", "Received", "Registered", "Attended", "Responded")
OPPORTUNITY_STAGES = ("Prospecting", "Qualification", "Needs Analysis", "Value Proposition", "Id. Decision Makers",
                      "Perception Analysis", "Proposal/Price Quote", "Negotiation/Review", "Closed Won", "Closed Lost")


def build_schema(mapping: CrmMapping) -> dict[str, dict[str, Field]]:
    """Lead and Task fields: the standard ones plus every custom field the mapping names."""
    lead = _system_fields() + [
        _std("FirstName", "string", "First Name", 40), _std("LastName", "string", "Last Name", 80, nillable=False),
        _std("Name", "string", "Full Name", 121, updateable=False, createable=False),
        _std("Title", "string", "Title", 128), _std("Company", "string", "Company", 255, nillable=False),
        _std("Email", "email", "Email", 80), _std("Phone", "phone", "Phone", 40),
        _std("Website", "url", "Website", 255), _std("City", "string", "City", 40),
        _std("State", "string", "State/Province", 80), _std("PostalCode", "string", "Zip/Postal Code", 20),
        _std("Country", "string", "Country", 80), _std("Industry", "picklist", "Industry", 255, picklist=INDUSTRIES),
        _std("NumberOfEmployees", "int", "Employees"), _std("AnnualRevenue", "currency", "Annual Revenue"),
        _std("Status", "picklist", "Status", 255, picklist=LEAD_STATUSES, nillable=False),
        _std("IsConverted", "boolean", "Converted", updateable=False, nillable=False),
        _std("ConvertedDate", "date", "Converted Date", updateable=False),
        _std("ConvertedOpportunityId", "reference", "Converted Opportunity ID", 18, updateable=False,
             reference_to=("Opportunity",)),
        _std("LastActivityDate", "date", "Last Activity", updateable=False, createable=False),
        _std("LeadSource", "picklist", "Lead Source", 255),
    ]
    fields = {f.name: f for f in lead}
    for name, item in mapping.fields.items():
        field_name = item.field
        if "." in field_name:
            continue  # a relationship path: the parent object's field
        if field_name in fields:
            if field_name == "LeadSource" and item.values:
                values = list(item.values.values()) + list((item.read_aliases or {}).keys())
                fields[field_name].picklist = tuple(dict.fromkeys(values))
            continue
        fields[field_name] = _custom_field(field_name, item.type, item.values, item.max_length)
    for event in mapping.events.values():
        fields[event.field] = _custom_field(event.field, "datetime", None, None)
        if event.count_field:
            fields[event.count_field] = _custom_field(event.count_field, "number", None, None)
    task = _system_fields() + [
        _std("WhoId", "reference", "Name ID", 18, reference_to=("Contact", "Lead")),
        _std("WhatId", "reference", "Related To ID", 18, reference_to=("Account", "Opportunity")),
        _std("Subject", "combobox", "Subject", 255), _std("ActivityDate", "date", "Due Date Only"),
        _std("Status", "picklist", "Status", 255, picklist=TASK_STATUSES, nillable=False),
        _std("Priority", "picklist", "Priority", 255, picklist=TASK_PRIORITIES, nillable=False),
        _std("Description", "textarea", "Description", 32000),
        _std("IsClosed", "boolean", "Closed", updateable=False, createable=False, nillable=False),
        _std("TaskSubtype", "picklist", "Task Subtype", 255, picklist=("Task", "Email", "Call"), updateable=False),
        _std("Type", "picklist", "Type", 255, picklist=("Call", "Email", "Meeting", "Other")),
        _std("CompletedDateTime", "datetime", "Completed Date/Time", updateable=False, createable=False),
    ]
    task_fields = {f.name: f for f in task}
    task_key = _custom_field(mapping.tasks.key_field, "string", None, 255)
    task_key.external_id = task_key.unique = task_key.case_sensitive = True  # as `leadflow crm setup` asks
    task_fields[mapping.tasks.key_field] = task_key
    return {"Lead": fields, "Task": task_fields, **_activity_and_outcome_schema()}


def _activity_and_outcome_schema() -> dict[str, dict[str, Field]]:
    event = _system_fields() + [
        _std("WhoId", "reference", "Name ID", 18, reference_to=("Contact", "Lead")),
        _std("WhatId", "reference", "Related To ID", 18, reference_to=("Account", "Opportunity")),
        _std("Subject", "combobox", "Subject", 255), _std("StartDateTime", "datetime", "Start Date Time"),
        _std("EndDateTime", "datetime", "End Date Time"), _std("ActivityDateTime", "datetime", "Due Date Time"),
        _std("DurationInMinutes", "int", "Duration"),
        _std("EventSubtype", "picklist", "Event Subtype", 255, picklist=("Event",), updateable=False),
    ]
    campaign = _system_fields() + [
        _std("Name", "string", "Name", 80, nillable=False),
        _std("Type", "picklist", "Type", 255, picklist=CAMPAIGN_TYPES),
        _std("Status", "picklist", "Status", 255, picklist=("Planned", "In Progress", "Completed", "Aborted")),
        _std("StartDate", "date", "Start Date"), _std("EndDate", "date", "End Date"),
        _std("IsActive", "boolean", "Active"),
    ]
    member = _system_fields() + [
        _std("CampaignId", "reference", "Campaign ID", 18, nillable=False, reference_to=("Campaign",)),
        _std("LeadId", "reference", "Lead ID", 18, reference_to=("Lead",)),
        _std("ContactId", "reference", "Contact ID", 18, reference_to=("Contact",)),
        _std("Status", "picklist", "Status", 255, picklist=MEMBER_STATUSES),
        _std("HasResponded", "boolean", "Responded", updateable=False, createable=False, nillable=False),
        _std("FirstRespondedDate", "date", "First Responded Date", updateable=False, createable=False),
    ]
    opportunity = _system_fields() + [
        _std("Name", "string", "Name", 120, nillable=False),
        _std("StageName", "picklist", "Stage", 255, picklist=OPPORTUNITY_STAGES, nillable=False),
        _std("IsClosed", "boolean", "Closed", updateable=False, createable=False, nillable=False),
        _std("IsWon", "boolean", "Won", updateable=False, createable=False, nillable=False),
        _std("Amount", "currency", "Amount"), _std("CloseDate", "date", "Close Date", nillable=False),
        _std("LeadSource", "picklist", "Lead Source", 255),
    ]
    return {name: {f.name: f for f in fields} for name, fields in (
        ("Event", event), ("Campaign", campaign), ("CampaignMember", member), ("Opportunity", opportunity))}


def _custom_field(name: str, kind: str, values: dict[str, str] | None, max_length: int | None) -> Field:
    label = name.removesuffix("__c").replace("_", " ")
    if kind == "enumeration":
        return Field(name, "picklist", label, 255, True, picklist=tuple((values or {}).values()), restricted=True)
    if kind == "bool":
        return Field(name, "boolean", label, custom=True, nillable=False)
    if kind == "number":
        return Field(name, "double", label, custom=True)
    if kind in ("datetime", "date"):
        return Field(name, kind, label, custom=True)
    if kind == "text":
        return Field(name, "textarea", label, 32768, True)
    return Field(name, "string", label, max_length or 255, True)


# ---- org state ----------------------------------------------------------------------------------


class Sessions:
    """Valid access tokens, the user of each and how many API calls each has left (None: unlimited).
    ``default_token`` is the integration user's; ``REP_SESSION_ID`` the rep's."""

    def __init__(self, default_token: str):
        self.default_token = default_token
        self.defaults = {default_token: USER_ID, REP_SESSION_ID: REP_USER_ID}
        self.tokens: dict[str, int | None] = {}
        self.users: dict[str, str] = {}
        self._counter = itertools.count(1)
        self.restore_default()

    def issue(self, budget: int | None, user_id: str = USER_ID) -> str:
        token = f"{ORG_ID[:15]}!AQ{next(self._counter):06d}.sandbox{len(self.tokens):04d}"
        self.tokens[token] = budget
        self.users[token] = user_id
        return token

    def user(self, token: str) -> str:
        """The id of the user ``token`` was issued to."""
        return self.users.get(token, USER_ID)

    def use(self, token: str, budget: int | None) -> bool:
        """Spend one call of ``token``; False when the session is invalid or expired."""
        if token not in self.tokens:
            return False
        left = self.tokens[token]
        if left is None and budget is not None:
            left = budget
        if left is not None:
            if left <= 0:
                del self.tokens[token]
                self.users.pop(token, None)
                return False
            self.tokens[token] = left - 1
        return True

    def expire_all(self) -> None:
        self.tokens.clear()
        self.users.clear()

    def restore_default(self) -> None:
        for token, user_id in self.defaults.items():
            self.tokens[token] = None
            self.users[token] = user_id


class OrgTable(Table):
    """A ``Table`` whose writes made outside the API (seed, tests editing records) are a person's:
    ``CreatedById``/``LastModifiedById`` default to the rep. API writes pass their session's user."""

    def bulk_load(self, rows: Iterable[tuple[str, dict[str, Any], int, int]]) -> None:
        super().bulk_load((record_id, _audited(record, created=True), created, modified)
                          for record_id, record, created, modified in rows)

    def insert(self, record_id: str, record: dict[str, Any], created: int, modified: int) -> None:
        super().insert(record_id, _audited(record, created=True), created, modified)

    def update(self, record_id: str, changes: dict[str, Any], modified: int) -> None:
        super().update(record_id, _audited(dict(changes), created=False), modified)


def _audited(record: dict[str, Any], created: bool, user_id: str = REP_USER_ID) -> dict[str, Any]:
    """``record`` with ``LastModifiedById`` (and on create ``CreatedById``) set unless given."""
    if created:
        record.setdefault("CreatedById", user_id)
    record.setdefault("LastModifiedById", user_id)
    return record


class SalesforceOrg:
    def __init__(self, mapping: CrmMapping, session_id: str = "sandbox-session"):
        self.mapping = mapping
        self.schema = build_schema(mapping)
        self.tables: dict[str, Table] = {name: OrgTable(name, str) for name in self.schema}
        self.lower = {name: {f.lower(): (f, spec.type) for f, spec in fields.items()}
                      for name, fields in self.schema.items()}
        for (obj, relationship), (_, parent) in PARENTS.items():
            for name, spec in self.schema[parent].items():
                path = f"{relationship}.{name}"
                self.lower[obj][path.lower()] = (path, spec.type)
        self.text_fields = {name: frozenset(api for api, kind in self.lower[name].values() if kind in TEXT_TYPES)
                            for name in self.schema}
        self.sessions = Sessions(session_id)
        self.cursors: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.jobs: dict[str, dict[str, Any]] = {}
        self.bulk_job_polls = 2  # polls a query job takes to be JobComplete (earlier ones: InProgress)
        self.bulk_job_error: str | None = None  # when set, query jobs end Failed with this errorMessage
        self._cursor_ids = itertools.count(1)
        self._ids = {name: itertools.count(1) for name in self.schema}
        self.api_calls = 0

    def object_of_id(self, record_id: str) -> str | None:
        for name, prefix in KEY_PREFIX.items():
            if record_id.startswith(prefix):
                return name
        return None

    def find(self, record_id: str) -> tuple[str, str] | None:
        """(object, 18-char id) for a 15- or 18-char id, or None."""
        obj = self.object_of_id(record_id)
        if obj is None:
            return None
        table = self.tables[obj]
        if len(record_id) == 18 and record_id in table:
            return obj, record_id
        if len(record_id) == 15:
            full = record_id + soql.id_suffix(record_id)
            if full in table:
                return obj, full
        return None

    def next_id(self, obj: str) -> str:
        table = self.tables[obj]
        while True:
            candidate = sf_id(KEY_PREFIX[obj], next(self._ids[obj]))
            if candidate not in table:
                return candidate

    def reserve_ids_after_load(self, obj: str) -> None:
        self._ids[obj] = itertools.count(len(self.tables[obj]) + 1)

    def parent_of(self, obj: str, record_id: str, relationship: str) -> tuple[str, str] | None:
        """(parent object, parent id) of a child-to-parent relationship, or None when the lookup is empty."""
        lookup, parent = PARENTS[(obj, relationship)]
        parent_id = self.tables[obj].records[record_id].get(lookup)
        if not parent_id or parent_id not in self.tables[parent]:
            return None
        return parent, parent_id

    def value(self, obj: str, record_id: str, name: str) -> Any:
        table = self.tables[obj]
        if "." in name:
            relationship, _, rest = name.partition(".")
            found = self.parent_of(obj, record_id, relationship)
            return None if found is None else self.value(found[0], found[1], rest)
        if name == "Id":
            return record_id
        if name == "CreatedDate":
            return table.created[record_id]
        if name in ("LastModifiedDate", "SystemModstamp"):
            return table.modified[record_id]
        return table.records[record_id].get(name)

    def field_type(self, obj: str, name: str) -> str:
        return self.lower[obj][name.lower()][1]

    def render_value(self, obj: str, name: str, value: Any) -> Any:
        spec = self.schema[obj][name]
        if value is None:
            return False if spec.type == "boolean" else None
        if spec.type == "datetime" and type(value) is int:
            return iso_sf(value)
        return value

    def render(self, obj: str, record_id: str, fields: list[str], version: str) -> dict[str, Any]:
        return self.renderer(obj, fields, version)(record_id)

    def renderer(self, obj: str, fields: list[str], version: str) -> Callable[[str], dict[str, Any]]:
        """A fast ``record id -> JSON record`` function for one field list."""
        table = self.tables[obj]
        records, created, modified = table.records, table.created, table.modified
        plan = []
        parents: dict[str, list[str]] = {}
        for name in fields:
            if "." in name:
                relationship, _, rest = name.partition(".")
                parents.setdefault(relationship, []).append(rest)
                continue
            spec = self.schema[obj][name]
            if name == "Id":
                plan.append((name, 0))
            elif name == "CreatedDate":
                plan.append((name, 1))
            elif name in ("LastModifiedDate", "SystemModstamp"):
                plan.append((name, 2))
            elif spec.type == "datetime":
                plan.append((name, 3))
            elif spec.type == "boolean":
                plan.append((name, 4))
            else:
                plan.append((name, 5))
        prefix = f"/services/data/{version}/sobjects/{obj}/"

        def render(record_id: str) -> dict[str, Any]:
            record = records[record_id]
            out: dict[str, Any] = {"attributes": {"type": obj, "url": prefix + record_id}}
            for name, kind in plan:
                if kind == 5:
                    out[name] = record.get(name)
                elif kind == 0:
                    out[name] = record_id
                elif kind == 2:
                    out[name] = iso_sf(modified[record_id])
                elif kind == 3:
                    value = record.get(name)
                    out[name] = iso_sf(value) if type(value) is int else value
                elif kind == 4:
                    out[name] = bool(record.get(name, False))
                else:
                    out[name] = iso_sf(created[record_id])
            for relationship, names in parents.items():
                found = self.parent_of(obj, record_id, relationship)
                out[relationship] = None if found is None else self.render(found[0], found[1], names, version)
            return out

        return render


_VERSION = re.compile(r"^v(\d+)\.0$")


class SalesforceApi:
    """Route handlers; auth, usage counting and faults are applied by the app."""

    def __init__(self, org: SalesforceOrg, credentials: Any,
                 record_errors: Callable[[str, list[str]], dict[str, tuple[str, str | None]]],
                 session_budget: Callable[[], int | None]):
        self.org = org
        self.credentials = credentials
        self.record_errors = record_errors
        self.session_budget = session_budget
        self.users = {user.username: user for user in (integration_user(credentials), REP)}
        self.user_by_id = {user.user_id: user for user in self.users.values()}

    def routes(self) -> list[tuple[str, str, str, Callable[[Ctx], Response]]]:
        data = "/services/data/{version}"
        out = [
            ("POST", "/services/oauth2/token", "salesforce.oauth.token", self.oauth_token),
            ("POST", "/services/Soap/u/{version}", "salesforce.soap.login", self.soap_login),
            ("GET", "/services/oauth2/userinfo", "salesforce.userinfo", self.userinfo),
            ("GET", "/services/data", "salesforce.versions", self.versions),
            ("GET", "/services/data/", "salesforce.versions", self.versions),
        ]
        for suffix in ("", "/"):
            out += [
                ("GET", f"{data}/query{suffix}", "salesforce.query", self.query),
                ("GET", f"{data}/queryAll{suffix}", "salesforce.query", self.query),
                ("GET", f"{data}/limits{suffix}", "salesforce.limits", self.limits),
                ("GET", f"{data}/sobjects{suffix}", "salesforce.sobjects.describe_global", self.describe_global),
                ("GET", data + "/sobjects/{sobject}/describe" + suffix, "salesforce.sobjects.describe", self.describe),
                ("POST", data + "/sobjects/{sobject}" + suffix, "salesforce.sobjects.create", self.create_one),
                ("PATCH", f"{data}/composite/sobjects{suffix}", "salesforce.composite.update", self.composite_update),
                ("POST", f"{data}/composite/sobjects{suffix}", "salesforce.composite.create", self.composite_create),
                ("PATCH", data + "/composite/sobjects/{sobject}/{field}" + suffix, "salesforce.composite.upsert",
                 self.composite_upsert),
            ]
        out += [
            ("POST", data + "/jobs/query", "salesforce.bulk2.query_create", self.bulk_create),
            ("GET", data + "/jobs/query/{job_id}", "salesforce.bulk2.query_get", self.bulk_get),
            ("PATCH", data + "/jobs/query/{job_id}", "salesforce.bulk2.query_abort", self.bulk_abort),
            ("GET", data + "/jobs/query/{job_id}/results", "salesforce.bulk2.query_results", self.bulk_results),
            ("GET", data + "/query/{locator}", "salesforce.query_more", self.query_more),
            ("GET", data + "/queryAll/{locator}", "salesforce.query_more", self.query_more),
            ("GET", data + "/sobjects/{sobject}/{record_id}", "salesforce.sobjects.get", self.get_one),
            ("PATCH", data + "/sobjects/{sobject}/{record_id}", "salesforce.sobjects.update", self.update_one),
        ]
        return out

    # -- auth -----------------------------------------------------------------------------------
    def instance_url(self, ctx: Ctx) -> str:
        return f"https://{ctx.header('host') or '127.0.0.1'}"

    def oauth_token(self, ctx: Ctx) -> Response:
        form = {key: values[-1] for key, values in parse_qs(ctx.body_bytes.decode("utf-8", "replace")).items()}
        grant = form.get("grant_type")
        creds = self.credentials
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        auth = ctx.header("authorization") or ""
        if auth.lower().startswith("basic "):
            try:
                client_id, _, client_secret = base64.b64decode(auth[6:]).decode().partition(":")
            except ValueError:
                return _oauth_error("invalid_client", "invalid client credentials")
        if grant not in ("password", "client_credentials"):
            return _oauth_error("unsupported_grant_type", "grant type not supported")
        if client_id != creds.client_id:
            return _oauth_error("invalid_client_id", "client identifier invalid")
        if client_secret != creds.client_secret:
            return _oauth_error("invalid_client", "invalid client credentials")
        if grant == "password":
            user = self._login_user(form.get("username"), form.get("password"))
            if user is None:
                return _oauth_error("invalid_grant", "authentication failure")
        else:
            user = self.users[creds.username]  # the connected app's run-as user
        token = self.org.sessions.issue(self.session_budget(), user.user_id)
        issued = str(now_ms())
        return json_response({
            "access_token": token, "instance_url": self.instance_url(ctx),
            "id": _identity_url(user.user_id), "token_type": "Bearer",
            "issued_at": issued, "signature": base64.b64encode(f"{token}{issued}".encode()).decode()[:44],
        })

    def soap_login(self, ctx: Ctx) -> Response:
        text = ctx.body_bytes.decode("utf-8", "replace")
        username = unescape(_xml_value(text, "username") or "")
        password = unescape(_xml_value(text, "password") or "")
        user = self._login_user(username, password)
        if user is None:
            return Response(_SOAP_FAULT, status_code=500, media_type="text/xml;charset=UTF-8")
        token = self.org.sessions.issue(self.session_budget(), user.user_id)
        version = ctx.params["version"]
        server = f"{self.instance_url(ctx)}/services/Soap/u/{version}/{ORG_ID[:15]}"
        body = _SOAP_OK.format(server=escape(server), session=escape(token), user=user.user_id, org=ORG_ID,
                               username=escape(username))
        return Response(body, media_type="text/xml;charset=UTF-8")

    def _login_user(self, username: str | None, password: str | None) -> User | None:
        user = self.users.get(username or "")
        return user if user is not None and user.accepts(password) else None

    def session_user(self, ctx: Ctx) -> str:
        """The id of the user whose bearer token (checked by the app's guard) made this request."""
        auth = ctx.header("authorization") or ""
        scheme, _, token = auth.partition(" ")
        return self.org.sessions.user(token if scheme.lower() in ("bearer", "oauth") else "")

    def userinfo(self, ctx: Ctx) -> Response:
        """OpenID Connect UserInfo of the session's user, in Salesforce's shape."""
        user = self.user_by_id[self.session_user(ctx)]
        given, _, family = user.name.partition(" ")
        rest = f"{self.instance_url(ctx)}/services/data/v{{version}}/"
        return json_response({
            "sub": _identity_url(user.user_id), "user_id": user.user_id, "organization_id": ORG_ID,
            "preferred_username": user.username, "nickname": user.username.partition("@")[0],
            "name": user.name, "email": user.username, "email_verified": True,
            "given_name": given, "family_name": family, "zoneinfo": "America/Los_Angeles",
            "active": True, "user_type": "STANDARD", "language": "en_US", "locale": "en_US",
            "utcOffset": -28800000,
            "urls": {"rest": rest, "sobjects": rest + "sobjects/", "query": rest + "query/"},
        })

    def versions(self, ctx: Ctx) -> Response:
        return json_response([{"label": f"Winter '{v}", "url": f"/services/data/v{v}.0", "version": f"{v}.0"}
                              for v in range(31, 63)])

    # -- query ----------------------------------------------------------------------------------
    def _version(self, ctx: Ctx) -> str:
        version = ctx.params["version"]
        match = _VERSION.match(version)
        if not match or not 31 <= int(match[1]) <= 66:
            raise SalesforceError(404, "NOT_FOUND", "The requested resource does not exist")
        return version

    def query(self, ctx: Ctx) -> Response:
        version = self._version(ctx)
        text = ctx.query.get("q")
        if not text:
            raise SalesforceError(400, "MALFORMED_QUERY", "A query string has to be specified")
        try:
            parsed = soql.parse(text)
            obj = self._sobject_for_query(parsed)
            soql.check_and_bind(parsed, self.org.lower[obj])
            children = [self._bind_child(obj, sub) for sub in parsed.subqueries]
            self._resolve_semi_joins(parsed)
        except soql.SoqlError as exc:
            raise SalesforceError(400, exc.code, exc.message) from None
        ids = self._run(obj, parsed)
        if parsed.count_only:
            return json_response({"totalSize": len(ids), "done": True, "records": []})
        fields = parsed.fields
        batch = self._batch_size(ctx)
        long_text = [f for f in fields if "." not in f and self.org.schema[obj][f].type == "textarea"
                     and self.org.schema[obj][f].custom and self.org.schema[obj][f].length > 255]
        if len(long_text) >= 2:
            batch = min(batch, 200)
        return self._page(ctx, version, obj, fields, ids, 0, batch, children=children)

    def _resolve_semi_joins(self, parsed: soql.Query) -> None:
        """Each ``f IN (SELECT Id FROM T WHERE ...)``: the inner query runs, and the condition becomes
        ``f IN (its ids)``. As in Salesforce, the inner query selects exactly one Id or reference field."""
        for node in soql.semi_joins(parsed.where):
            inner = node.value
            inner_obj = self._sobject_for_query(inner)
            soql.check_and_bind(inner, self.org.lower[inner_obj])
            if len(inner.fields) != 1 or self.org.field_type(inner_obj, inner.fields[0]) not in ("id", "reference"):
                raise soql.SoqlError("MALFORMED_QUERY", soql._located(
                    parsed.soql, node.pos, "Semi join sub-selects can only select one Id or reference field"))
            ids = self._run(inner_obj, inner)
            node.op, node.value = "IN", [self.org.value(inner_obj, i, inner.fields[0]) for i in ids]

    def _with_children(self, version: str, ids: list[str], offset: int, batch: int, render: Callable[[str], Any],
                       children: list[Any]) -> tuple[list[dict[str, Any]], int]:
        """Parent records from ``offset`` with their subquery results, as many as fit in ``batch``
        records: child records count toward the batch size, as in Salesforce (at least one parent)."""
        records: list[dict[str, Any]] = []
        used = 0
        for record_id in ids[offset:offset + batch]:
            record = render(record_id)
            for child in children:
                record[child[0]] = self._children(version, record_id, child)
            weight = 1 + sum(len((record[child[0]] or {}).get("records") or []) for child in children)
            if records and used + weight > batch:
                break
            records.append(record)
            used += weight
        return records, len(records)

    def _bind_child(self, obj: str, sub: soql.Query) -> tuple[str, str, str, soql.Query]:
        """(relationship, child object, link field, bound subquery) of a parent-to-child subquery."""
        for (parent, relationship), (child, link) in CHILDREN.items():
            if parent == obj and relationship.lower() == sub.sobject.lower():
                soql.check_and_bind(sub, self.org.lower[child])
                return relationship, child, link, sub
        raise soql.SoqlError("INVALID_TYPE", soql._located(
            sub.soql, sub.sobject_pos, f"Didn't understand relationship '{sub.sobject}' in FROM part of query call. "
            "If you are attempting to use a custom relationship, be sure to append the '__r' after the custom "
            "relationship name. Please reference your WSDL or the describe call for the appropriate names."))

    def _children(self, version: str, parent_id: str, child: tuple[str, str, str, soql.Query]) -> dict[str, Any] | None:
        """One parent's subquery result: ``{totalSize, done, records}``, or None when it has none."""
        _, obj, link, sub = child
        ids = sorted(self.org.tables[obj].lookup(link, parent_id))
        if sub.where is not None:
            view = _RecordView(self.org, obj)
            ids = [i for i in ids if soql.matches(sub.where, view.at(i), self.org.text_fields[obj])]
        ids = self._order(obj, ids, sub.order_by, "id")
        if sub.limit is not None:
            ids = ids[:sub.limit]
        if not ids:
            return None
        render = self.org.renderer(obj, sub.fields, version)
        return {"totalSize": len(ids), "done": True, "records": [render(i) for i in ids]}

    def _sobject_for_query(self, parsed: soql.Query) -> str:
        for name in self.org.schema:
            if name.lower() == parsed.sobject.lower():
                return name
        raise soql.SoqlError("INVALID_TYPE", soql._located(
            parsed.soql, parsed.soql.lower().find(parsed.sobject.lower()),
            f"sObject type '{parsed.sobject}' is not supported. If you are attempting to use a custom object, be "
            "sure to append the '__c' after the entity name. Please reference your WSDL or the describe call for "
            "the appropriate names."))

    def _batch_size(self, ctx: Ctx) -> int:
        options = ctx.header("sforce-query-options") or ""
        match = re.search(r"batchSize\s*=\s*(\d+)", options)
        if match:
            return max(200, min(QUERY_BATCH, int(match[1])))
        return QUERY_BATCH

    def _run(self, obj: str, parsed: soql.Query) -> list[str]:
        table = self.org.tables[obj]
        where = parsed.where
        low, low_inc, high, high_inc = soql.modstamp_range(where, "SystemModstamp")
        if (low, high) == (None, None):
            low, low_inc, high, high_inc = soql.modstamp_range(where, "LastModifiedDate")
        lookup = _equality_lookup(where)
        order = "id"
        if lookup is not None and (low, high) == (None, None):
            field_name, values = lookup
            found: set[str] = set()
            for value in values:
                if field_name == "Id":
                    hit = self.org.find(value) if isinstance(value, str) else None
                    if hit and hit[0] == obj:
                        found.add(hit[1])
                else:
                    fold = field_name in self.org.text_fields[obj]
                    found |= table.lookup(field_name, value.lower() if fold and isinstance(value, str) else value,
                                          _lower if fold else _plain)
            candidates = sorted(found)
        elif (low, high) != (None, None):
            candidates = IdColumn(table.by_modified(low, low_inc, high, high_inc), 2)
            order = "mod"
        else:
            candidates = IdColumn(list(table.ids_in_order()), 1)
        if where is not None and not (order == "mod" and _only_range(where)):
            text_fields = self.org.text_fields[obj]
            view = _RecordView(self.org, obj)
            candidates = [i for i in candidates if soql.matches(where, view.at(i), text_fields)]
        candidates = self._order(obj, candidates, parsed.order_by, order)
        start = parsed.offset or 0
        if parsed.limit is None and not start:
            return candidates
        stop = start + parsed.limit if parsed.limit is not None else None
        return candidates[start:stop]

    def _order(self, obj: str, ids: Any, order_by: list[soql.OrderItem], natural: str) -> Any:
        if not order_by:
            return ids
        names = [(item.field, item.descending) for item in order_by]
        if natural == "mod" and names in ([("SystemModstamp", False)], [("SystemModstamp", False), ("Id", False)],
                                         [("LastModifiedDate", False)], [("LastModifiedDate", False), ("Id", False)]):
            return ids
        if natural == "id" and names == [("Id", False)]:
            return ids
        ids = list(ids)
        for item in reversed(order_by):
            nulls_last = item.nulls_last if item.nulls_last is not None else item.descending
            fold = item.field in self.org.text_fields[obj]

            def key(i: str, name: str = item.field, fold: bool = fold, nulls_last: bool = nulls_last) -> tuple:
                value = self.org.value(obj, i, name)
                if value is None:
                    return (1 if nulls_last != item.descending else 0, 0)
                return (0 if nulls_last != item.descending else 1, value.lower() if fold and isinstance(value, str) else value)

            ids = sorted(ids, key=key, reverse=item.descending)
        return ids

    def _page(self, ctx: Ctx, version: str, obj: str, fields: list[str], ids: list[str], offset: int,
              batch: int, locator: str | None = None, children: list[Any] | None = None) -> Response:
        render = self.org.renderer(obj, fields, version)
        if children:
            records, size = self._with_children(version, ids, offset, batch, render, children)
        else:
            records, size = [render(i) for i in ids[offset:offset + batch]], batch
        body: dict[str, Any] = {"totalSize": len(ids), "done": offset + size >= len(ids)}
        if not body["done"]:
            if locator is None:
                locator = f"0r8{next(self.org._cursor_ids):012d}AAA"
                self.org.cursors[locator] = {"obj": obj, "fields": fields, "ids": ids, "batch": batch,
                                             "children": children or []}
                while len(self.org.cursors) > 500:
                    self.org.cursors.popitem(last=False)
            body["nextRecordsUrl"] = f"/services/data/{version}/query/{locator}-{offset + size}"  # after its parents
        body["records"] = records
        return json_response(body)

    def query_more(self, ctx: Ctx) -> Response:
        version = self._version(ctx)
        raw = ctx.params["locator"]
        locator, _, offset_text = raw.rpartition("-")
        cursor = self.org.cursors.get(locator)
        if cursor is None or not offset_text.isdigit():
            raise SalesforceError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        offset = int(offset_text)
        if offset >= len(cursor["ids"]):
            raise SalesforceError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        return self._page(ctx, version, cursor["obj"], cursor["fields"], cursor["ids"], offset, cursor["batch"], locator,
                          cursor.get("children"))

    # -- Bulk API 2.0 query jobs ---------------------------------------------------------------
    def bulk_create(self, ctx: Ctx) -> Response:
        version = self._version(ctx)
        try:
            body = ctx.json() or {}
        except BadJson as exc:
            raise SalesforceError(400, "JSON_PARSER_ERROR", str(exc)) from None
        operation = body.get("operation")
        if operation not in ("query", "queryAll"):
            raise SalesforceError(400, "INVALIDJOB", f"InvalidJob : Invalid operation: {operation}")
        delimiter = body.get("columnDelimiter", "COMMA")
        line_ending = body.get("lineEnding", "LF")
        if delimiter not in _DELIMITERS or line_ending not in ("LF", "CRLF"):
            raise SalesforceError(400, "INVALIDJOB", "InvalidJob : invalid columnDelimiter or lineEnding")
        text = body.get("query") or ""
        try:
            parsed = soql.parse(text)
            obj = self._sobject_for_query(parsed)
            soql.check_and_bind(parsed, self.org.lower[obj])
        except soql.SoqlError as exc:
            raise SalesforceError(400, exc.code, exc.message) from None
        if parsed.count_only:
            raise SalesforceError(400, "INVALIDJOB", "InvalidJob : COUNT() is not supported by Bulk API query jobs")
        clause = _bulk_unsupported_clause(parsed)
        if clause:
            raise SalesforceError(400, "INVALIDJOB", f"InvalidJob : {clause} is not supported by Bulk API 2.0 "
                                                     "query jobs")
        ids = sorted(self._run(obj, parsed))
        job_id = f"750{next(self.org._cursor_ids):012d}AAA"
        stamp = iso_sf(now_ms())
        job = {"id": job_id, "operation": operation, "object": obj, "createdById": self.session_user(ctx),
               "createdDate": stamp,
               "systemModstamp": stamp, "state": "UploadComplete", "concurrencyMode": "Parallel",
               "contentType": "CSV", "apiVersion": float(version[1:]), "lineEnding": line_ending,
               "columnDelimiter": delimiter}
        self.org.jobs[job_id] = dict(job, _ids=ids, _fields=parsed.fields, _polls=0)
        return json_response(job)

    def _job(self, ctx: Ctx) -> dict[str, Any]:
        self._version(ctx)
        job = self.org.jobs.get(ctx.params["job_id"])
        if job is None:
            raise SalesforceError(404, "NOT_FOUND", "The requested resource does not exist")
        return job

    def bulk_get(self, ctx: Ctx) -> Response:
        job = self._job(ctx)
        job["_polls"] += 1
        if job["state"] in ("UploadComplete", "InProgress"):
            self._advance(job)
        info = {k: v for k, v in job.items() if not k.startswith("_")}
        info.update(numberRecordsProcessed=len(job["_ids"]) if job["state"] == "JobComplete" else 0, retries=0,
                    totalProcessingTime=len(job["_ids"]) // 100)
        return json_response(info)

    def _advance(self, job: dict[str, Any]) -> None:
        if job["_polls"] < self.org.bulk_job_polls:
            job["state"] = "InProgress"
        elif self.org.bulk_job_error:
            job.update(state="Failed", errorMessage=self.org.bulk_job_error)
        else:
            job["state"] = "JobComplete"

    def bulk_abort(self, ctx: Ctx) -> Response:
        job = self._job(ctx)
        body = ctx.json() or {}
        if body.get("state") != "Aborted":
            raise SalesforceError(400, "INVALIDJOBSTATE", "Query jobs can only be aborted")
        if job["state"] == "JobComplete":
            raise SalesforceError(400, "INVALIDJOBSTATE", "Job is already complete")
        job["state"] = "Aborted"
        return json_response({k: v for k, v in job.items() if not k.startswith("_")})

    def bulk_results(self, ctx: Ctx) -> Response:
        job = self._job(ctx)
        if job["state"] != "JobComplete":
            raise SalesforceError(400, "INVALIDJOBSTATE", f"Job is not complete: {job['state']}")
        offset = _decode_locator(ctx.query.get("locator"))
        limit = int(ctx.query.get("maxRecords") or 50_000)
        ids = job["_ids"]
        chunk = ids[offset:offset + limit]
        text = _csv(self.org, job["object"], job["_fields"], chunk, _DELIMITERS[job["columnDelimiter"]],
                    "\r\n" if job["lineEnding"] == "CRLF" else "\n")
        nxt = offset + len(chunk)
        locator = base64.b64encode(str(nxt).encode()).decode().rstrip("=") if nxt < len(ids) else "null"
        return Response(text.encode(), media_type="text/csv",
                        headers={"Sforce-Locator": locator, "Sforce-NumberOfRecords": str(len(chunk))})

    # -- metadata -------------------------------------------------------------------------------
    def _sobject(self, ctx: Ctx) -> str:
        name = ctx.params["sobject"]
        for known in self.org.schema:
            if known.lower() == name.lower():
                return known
        raise SalesforceError(404, "NOT_FOUND", "The requested resource does not exist")

    def describe(self, ctx: Ctx) -> Response:
        version = self._version(ctx)
        obj = self._sobject(ctx)
        return json_response({
            "name": obj, "label": obj, "labelPlural": obj + "s", "keyPrefix": KEY_PREFIX[obj], "custom": False,
            "createable": True, "updateable": True, "queryable": True, "deletable": True, "searchable": True,
            "fields": [spec.describe() for spec in self.org.schema[obj].values()],
            "urls": {"sobject": f"/services/data/{version}/sobjects/{obj}",
                     "describe": f"/services/data/{version}/sobjects/{obj}/describe",
                     "rowTemplate": f"/services/data/{version}/sobjects/{obj}/{{ID}}"},
        })

    def describe_global(self, ctx: Ctx) -> Response:
        version = self._version(ctx)
        return json_response({"encoding": "UTF-8", "maxBatchSize": 200, "sobjects": [
            {"name": obj, "label": obj, "keyPrefix": KEY_PREFIX[obj], "custom": False, "queryable": True,
             "createable": True, "updateable": True,
             "urls": {"sobject": f"/services/data/{version}/sobjects/{obj}"}} for obj in self.org.schema]})

    def limits(self, ctx: Ctx, daily: int | None = None) -> Response:
        self._version(ctx)
        total = daily or DEFAULT_DAILY
        return json_response({
            "DailyApiRequests": {"Max": total, "Remaining": max(0, total - self.org.api_calls)},
            "DailyBulkV2QueryJobs": {"Max": 10000, "Remaining": 10000},
            "DailyBulkV2QueryFileStorageMB": {"Max": 976562, "Remaining": 976562},
            "DataStorageMB": {"Max": 1024, "Remaining": 1000},
        })

    # -- writes ---------------------------------------------------------------------------------
    def _records_body(self, ctx: Ctx) -> tuple[list[dict[str, Any]], bool]:
        try:
            body = ctx.json()
        except BadJson as exc:
            raise SalesforceError(400, "JSON_PARSER_ERROR", f"Unexpected character: {exc}") from None
        if not isinstance(body, dict) or not isinstance(body.get("records"), list):
            raise SalesforceError(400, "JSON_PARSER_ERROR", "Expected an object with a 'records' array")
        records = body["records"]
        if len(records) > COLLECTION_LIMIT:
            raise SalesforceError(400, "EXCEEDED_ID_LIMIT",
                                  f"Maximum number of records in a collection request is {COLLECTION_LIMIT}")
        return records, bool(body.get("allOrNone", False))

    def _check_fields(self, obj: str, record: dict[str, Any]) -> None:
        schema = self.org.schema[obj]
        for name, value in record.items():
            if name in ("attributes", "id", "Id"):
                continue
            spec = schema.get(name)
            if spec is None:
                raise SalesforceError(400, "INVALID_FIELD", f"No such column '{name}' on sobject of type {obj}")
            if value is None:
                continue
            if spec.type in ("double", "int", "currency") and (isinstance(value, bool) or not _numeric(value)):
                raise SalesforceError(400, "JSON_PARSER_ERROR",
                                      f"Cannot deserialize instance of double from VALUE_STRING value {value}")
            if spec.type == "boolean" and not isinstance(value, bool) and str(value).lower() not in ("true", "false"):
                raise SalesforceError(400, "JSON_PARSER_ERROR",
                                      f"Cannot deserialize instance of boolean from VALUE_STRING value {value}")

    def _record_problem(self, obj: str, record: dict[str, Any], creating: bool) -> dict[str, Any] | None:
        schema = self.org.schema[obj]
        for name, value in record.items():
            if name in ("attributes", "id", "Id"):
                continue
            spec = schema[name]
            if not (spec.createable if creating else spec.updateable):
                return _save_error("INVALID_FIELD_FOR_INSERT_UPDATE",
                                   f"Unable to create/update fields: {name}. Please check the security settings of "
                                   "this field and verify that it is read/write for your profile or permission set.",
                                   [name])
            if value is None or value == "":
                continue
            if spec.type == "picklist" and spec.restricted and str(value) not in spec.picklist:
                return _save_error("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                                   f"{spec.label}: bad value for restricted picklist field: {value}", [name])
            if spec.type in TEXT_TYPES and spec.length and len(str(value)) > spec.length:
                return _save_error("STRING_TOO_LONG",
                                   f"{spec.label}: data value too large: {str(value)[:40]} (max length={spec.length})",
                                   [name])
            if spec.type in ("datetime", "date") and parse_datetime_ms(str(value)) is None:
                return _save_error("INVALID_TYPE_ON_FIELD_IN_RECORD",
                                   f"{spec.label}: value not of required type: {value}", [name])
            if spec.type == "reference" and self.org.find(str(value)) is None and not str(value).startswith("005"):
                return _save_error("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", [name])
        return None

    def _stored(self, obj: str, record: dict[str, Any]) -> dict[str, Any]:
        schema = self.org.schema[obj]
        out: dict[str, Any] = {}
        for name, value in record.items():
            if name in ("attributes", "id", "Id"):
                continue
            spec = schema[name]
            if value is None or value == "":
                out[name] = None
            elif spec.type == "datetime":
                out[name] = parse_datetime_ms(str(value))
            elif spec.type == "date":
                out[name] = str(value)[:10]
            elif spec.type in ("double", "int", "currency"):
                out[name] = int(float(value)) if spec.type == "int" else float(value)
            elif spec.type == "boolean":
                out[name] = value if isinstance(value, bool) else str(value).lower() == "true"
            else:
                out[name] = str(value)
        return out

    def _checked_records(self, ctx: Ctx) -> tuple[list[dict[str, Any]], bool]:
        """The collection's records, each of a known sObject type with known fields."""
        records, all_or_none = self._records_body(ctx)
        for record in records:
            obj = (record.get("attributes") or {}).get("type")
            if obj not in self.org.schema:
                raise SalesforceError(400, "INVALID_TYPE", f"sObject type '{obj}' is not supported.")
            self._check_fields(obj, record)
        return records, all_or_none

    def composite_update(self, ctx: Ctx) -> Response:
        self._version(ctx)
        records, all_or_none = self._checked_records(ctx)
        ids = [str(record.get("id") or record.get("Id") or "") for record in records]
        injected = self.record_errors(ctx.endpoint, [i for i in ids if i])
        results: list[dict[str, Any]] = []
        plan: list[tuple[str, str, dict[str, Any]] | None] = []
        claimed: dict[tuple[str, str], str] = {}
        for record, raw in zip(records, ids):
            obj = record["attributes"]["type"]
            found = self.org.find(raw) if raw else None
            if not raw:
                results.append({"success": False, "errors": [_save_error(
                    "MISSING_ARGUMENT", "Id not specified in an update call", [])]})
                plan.append(None)
            elif found is None or found[0] != obj:
                code = "MALFORMED_ID" if not re.fullmatch(r"[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?", raw) else \
                    "INVALID_CROSS_REFERENCE_KEY"
                message = f"malformed id {raw}" if code == "MALFORMED_ID" else "invalid cross reference id"
                results.append({"success": False, "errors": [_save_error(code, message, ["Id"])]})
                plan.append(None)
            elif raw in injected:
                code, message = injected[raw]
                results.append({"id": found[1], "success": False, "errors": [_save_error(
                    code, message or _default_message(code, found[1]), [])]})
                plan.append(None)
            else:
                problem = self._record_problem(obj, record, creating=False) or \
                    self._duplicate_problem(obj, record, found[1], claimed)
                if problem:
                    results.append({"id": found[1], "success": False, "errors": [problem]})
                    plan.append(None)
                else:
                    results.append({"id": found[1], "success": True, "errors": []})
                    plan.append((obj, found[1], self._stored(obj, record)))
        if all_or_none and any(not r["success"] for r in results):
            return json_response(_rolled_back(results))
        stamp, user_id = now_ms(), self.session_user(ctx)
        for item in plan:
            if item is not None:
                obj, record_id, changes = item
                self._apply(obj, record_id, changes, stamp, user_id)
        return json_response(results)

    def holders(self, obj: str, name: str, value: Any) -> list[str]:
        """Ids of the records whose field ``name`` equals ``value`` (case-insensitively unless the
        field is case-sensitive), oldest first."""
        if value is None or value == "":
            return []
        table = self.org.tables[obj]
        ids = table.lookup(name, str(value).lower(), _lower)
        if self.org.schema[obj][name].case_sensitive:
            ids = {i for i in ids if table.records[i].get(name) == str(value)}
        return sorted(ids, key=lambda i: (table.created[i], i))

    def _duplicate_problem(self, obj: str, record: dict[str, Any], record_id: str,
                           claimed: dict[tuple[str, str], str]) -> dict[str, Any] | None:
        """DUPLICATE_VALUE when a unique field's value is held by another record, or by an earlier
        record of the same request (``claimed``: (field, value) -> record id, updated here)."""
        for name, value in record.items():
            spec = self.org.schema[obj].get(name)
            if spec is None or not spec.unique or value in (None, ""):
                continue
            slot = (name, str(value) if spec.case_sensitive else str(value).lower())
            others = [i for i in self.holders(obj, name, value) if i != record_id]
            if not others and claimed.get(slot, record_id) != record_id:
                others = [claimed[slot]]
            if others:
                return _save_error("DUPLICATE_VALUE",
                                   f"duplicate value found: {name} duplicates value on record with id: {others[0]}", [])
            claimed[slot] = record_id
        return None

    def composite_upsert(self, ctx: Ctx) -> Response:
        """sObject Collections upsert (API v46.0+): each record of ``sobject`` is matched on the
        external ID field of the URL; no match creates it (``created: true``), one match updates
        it (``created: false``), several give DUPLICATE_EXTERNAL_ID, as does one value twice in
        the request. Results in request order; ``allOrNone`` rolls back as the other collections do."""
        version = self._version(ctx)
        if int(version[1:-2]) < 46:
            raise SalesforceError(404, "NOT_FOUND", "The requested resource does not exist")
        obj = self._sobject(ctx)
        field = self._external_id_field(obj, ctx.params["field"])
        records, all_or_none = self._checked_records(ctx)
        values = [str(record.get(field) or "") for record in records]
        injected = self.record_errors(ctx.endpoint, [v for v in values if v])
        results: list[dict[str, Any]] = []
        plan: list[tuple[str, str | None, dict[str, Any]] | None] = []
        claimed: dict[tuple[str, str], str] = {}
        for record, value in zip(records, values):
            outcome, step = self._upsert_one(obj, field, record, value, values.count(value), injected, claimed)
            results.append(outcome)
            plan.append(step)
        if all_or_none and any(not r["success"] for r in results):
            return json_response(_rolled_back([{k: v for k, v in r.items() if k != "id"} for r in results]))
        stamp, user_id = now_ms(), self.session_user(ctx)
        for step in plan:
            if step is None:
                continue
            record_id, existing, record = step
            if existing:
                self._apply(obj, record_id, self._stored(obj, record), stamp, user_id)
            else:
                self._insert(obj, record_id, record, user_id)
        return json_response(results)

    def _external_id_field(self, obj: str, raw: str) -> str:
        known = self.org.lower[obj].get(raw.lower())
        if known is None or not (self.org.schema[obj][known[0]].external_id or known[0] == "Id"):
            raise SalesforceError(400, "INVALID_FIELD",
                                  f"Field name provided, {raw} is not an External ID or indexed field for {obj}")
        if known[0] == "Id":
            raise SalesforceError(400, "INVALID_FIELD", "Only external ids are supported: do not upsert by Id")
        return known[0]

    def _upsert_one(self, obj: str, field: str, record: dict[str, Any], value: str, occurrences: int,
                    injected: dict[str, tuple[str, str | None]], claimed: dict[tuple[str, str], str]
                    ) -> tuple[dict[str, Any], tuple[str, bool, dict[str, Any]] | None]:
        """(the UpsertResult, the planned write (record id, exists, record) or None)."""
        def failed(problem: dict[str, Any]) -> tuple[dict[str, Any], None]:
            return {"success": False, "errors": [problem], "created": False}, None

        if record["attributes"]["type"] != obj:
            return failed(_save_error("INVALID_TYPE", f"This collection holds {obj} records only", []))
        if record.get("id") or record.get("Id"):
            return failed(_save_error("INVALID_FIELD", "cannot specify Id in an upsert by external id", ["Id"]))
        if not value:
            return failed(_save_error("MISSING_ARGUMENT", f"{field} not specified", [field]))
        if occurrences > 1:
            return failed(_save_error("DUPLICATE_EXTERNAL_ID", f"Duplicate external id specified: {value}", [field]))
        if value in injected:
            code, message = injected[value]
            return failed(_save_error(code, message or _default_message(code, value), []))
        matches = self.holders(obj, field, value)
        if len(matches) > 1:
            return failed(_save_error("DUPLICATE_EXTERNAL_ID", f"{field}: more than one record found for external id "
                                      f"field: [{', '.join(matches)}]", [field]))
        exists = bool(matches)
        record_id = matches[0] if exists else self.org.next_id(obj)
        problem = (self._record_problem(obj, record, creating=False) if exists else self._create_problem(obj, record)) \
            or self._duplicate_problem(obj, record, record_id, claimed)
        if problem:
            return failed(problem)
        return {"id": record_id, "success": True, "errors": [], "created": not exists}, (record_id, exists, record)

    def _apply(self, obj: str, record_id: str, changes: dict[str, Any], stamp: int, user_id: str) -> None:
        if obj == "Task" and "Status" in changes:
            changes["IsClosed"] = True if changes["Status"] == "Completed" else None
        self.org.tables[obj].update(record_id, _audited(changes, created=False, user_id=user_id), stamp)

    def composite_create(self, ctx: Ctx) -> Response:
        self._version(ctx)
        records, all_or_none = self._checked_records(ctx)
        keys = [str(record.get(self.org.mapping.tasks.key_field) or "") for record in records]
        injected = self.record_errors(ctx.endpoint, [k for k in keys if k])
        results, plan = [], []
        claimed: dict[tuple[str, str], str] = {}
        for record, key in zip(records, keys):
            obj = record["attributes"]["type"]
            record_id = self.org.next_id(obj)
            problem = self._create_problem(obj, record) or self._duplicate_problem(obj, record, record_id, claimed)
            if key and key in injected:
                code, message = injected[key]
                problem = _save_error(code, message or _default_message(code, key), [])
            if record.get("id") or record.get("Id"):
                problem = _save_error("INVALID_FIELD", "cannot specify Id in an insert call", ["Id"])
            if problem:
                results.append({"success": False, "errors": [problem]})
                plan.append(None)
                continue
            results.append({"id": record_id, "success": True, "errors": []})
            plan.append((obj, record_id, record))
        if all_or_none and any(not r["success"] for r in results):
            return json_response(_rolled_back([{k: v for k, v in r.items() if k != "id"} for r in results]))
        user_id = self.session_user(ctx)
        for item in plan:
            if item is not None:
                self._insert(*item, user_id)
        return json_response(results)

    def _create_problem(self, obj: str, record: dict[str, Any]) -> dict[str, Any] | None:
        problem = self._record_problem(obj, record, creating=True)
        if problem:
            return problem
        if obj == "Task":
            who = record.get("WhoId")
            if who and str(who).startswith("00Q") and record.get("WhatId"):
                return _save_error("FIELD_INTEGRITY_EXCEPTION",
                                   "Related To ID: id value of incorrect type: a Lead cannot have a related record",
                                   ["WhatId"])
        if obj == "Lead":
            missing = [name for name in ("LastName", "Company") if not record.get(name)]
            if missing:
                return _save_error("REQUIRED_FIELD_MISSING", f"Required fields are missing: [{', '.join(missing)}]",
                                   missing)
        return None

    def _insert(self, obj: str, record_id: str, record: dict[str, Any], user_id: str) -> None:
        stored = {k: v for k, v in self._stored(obj, record).items() if v is not None}
        if obj == "Task":
            stored.setdefault("Status", "Not Started")
            stored.setdefault("Priority", "Normal")
            stored.setdefault("TaskSubtype", "Task")
            if stored["Status"] == "Completed":
                stored["IsClosed"] = True
        if obj == "Lead":
            stored.setdefault("Status", "Open - Not Contacted")
        stored.setdefault("OwnerId", user_id)
        stamp = now_ms()
        self.org.tables[obj].insert(record_id, _audited(stored, created=True, user_id=user_id), stamp, stamp)

    def create_one(self, ctx: Ctx) -> Response:
        self._version(ctx)
        obj = self._sobject(ctx)
        try:
            record = ctx.json() or {}
        except BadJson as exc:
            raise SalesforceError(400, "JSON_PARSER_ERROR", str(exc)) from None
        self._check_fields(obj, record)
        record_id = self.org.next_id(obj)
        problem = self._create_problem(obj, record) or self._duplicate_problem(obj, record, record_id, {})
        if problem:
            raise SalesforceError(400, problem["statusCode"], problem["message"], problem["fields"])
        self._insert(obj, record_id, record, self.session_user(ctx))
        return json_response({"id": record_id, "success": True, "errors": []}, 201)

    def get_one(self, ctx: Ctx) -> Response:
        version = self._version(ctx)
        obj = self._sobject(ctx)
        found = self.org.find(ctx.params["record_id"])
        if found is None or found[0] != obj:
            raise SalesforceError(404, "NOT_FOUND", "The requested resource does not exist")
        fields = ctx.query.get("fields")
        names = [self.org.lower[obj][n.strip().lower()][0] for n in fields.split(",")
                 if n.strip().lower() in self.org.lower[obj]] if fields else list(self.org.schema[obj])
        return json_response(self.org.render(obj, found[1], names, version))

    def update_one(self, ctx: Ctx) -> Response:
        self._version(ctx)
        obj = self._sobject(ctx)
        found = self.org.find(ctx.params["record_id"])
        if found is None or found[0] != obj:
            raise SalesforceError(404, "NOT_FOUND", "The requested resource does not exist")
        try:
            record = ctx.json() or {}
        except BadJson as exc:
            raise SalesforceError(400, "JSON_PARSER_ERROR", str(exc)) from None
        self._check_fields(obj, record)
        injected = self.record_errors(ctx.endpoint, [found[1]])
        if found[1] in injected:
            code, message = injected[found[1]]
            raise SalesforceError(400, code, message or _default_message(code, found[1]), [])
        problem = self._record_problem(obj, record, creating=False) or \
            self._duplicate_problem(obj, record, found[1], {})
        if problem:
            raise SalesforceError(400, problem["statusCode"], problem["message"], problem["fields"])
        self._apply(obj, found[1], self._stored(obj, record), now_ms(), self.session_user(ctx))
        return Response(status_code=204)


_DELIMITERS = {"COMMA": ",", "TAB": "\t", "PIPE": "|", "SEMICOLON": ";", "CARET": "^", "BACKQUOTE": "`"}


def _bulk_unsupported_clause(parsed: soql.Query) -> str | None:
    """The first clause Bulk API 2.0 refuses in a query job (results come in Id order instead)."""
    for clause, present in (("ORDER BY", bool(parsed.order_by)), ("LIMIT", parsed.limit is not None),
                            ("OFFSET", parsed.offset is not None), ("A nested (parent-to-child) query",
                                                                      bool(parsed.subqueries))):
        if present:
            return clause
    return None


def _decode_locator(raw: str | None) -> int:
    if not raw or raw == "null":
        return 0
    try:
        return int(base64.b64decode(raw + "=" * (-len(raw) % 4)).decode())
    except ValueError:
        raise SalesforceError(400, "INVALIDLOCATOR", f"Invalid locator: {raw}") from None


def _csv(org: SalesforceOrg, obj: str, fields: list[str], ids: list[str], delimiter: str, newline: str) -> str:
    """Bulk API 2.0 result CSV: a header row, every value quoted, nulls empty, datetimes with ``Z``."""
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator=newline, quoting=csv.QUOTE_ALL)
    writer.writerow(fields)
    render = org.renderer(obj, fields, "v59.0")
    for record_id in ids:
        row = render(record_id)
        writer.writerow([_csv_value(org.field_type(obj, name), _dotted(row, name)) for name in fields])
    return out.getvalue()


def _dotted(row: dict[str, Any], name: str) -> Any:
    """A rendered value by field path (``Campaign.Type`` from the nested parent record)."""
    for part in name.split("."):
        if not isinstance(row, dict):
            return None
        row = row.get(part)
    return row


def _csv_value(kind: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if kind == "datetime" and isinstance(value, str) and value.endswith("+0000"):
        return value[:-5] + "Z"
    return str(value)


def _equality_lookup(where: Any) -> tuple[str, list[Any]] | None:
    """A top-level ANDed ``field = value`` / ``field IN (...)`` usable with an index."""
    parts = soql._anded(where)
    for part in parts:
        if isinstance(part, soql.Comparison) and part.op in ("=", "IN"):
            values = part.value if isinstance(part.value, list) else [part.value]
            if all(isinstance(v, str) for v in values):
                return part.field, values
    return None


def _only_range(where: Any) -> bool:
    """True when the condition is nothing but ANDed SystemModstamp/LastModifiedDate bounds."""
    return all(isinstance(part, soql.Comparison) and part.field in ("SystemModstamp", "LastModifiedDate")
               and part.op in (">", ">=", "<", "<=") for part in soql._anded(where)) and \
        len({part.field for part in soql._anded(where)}) == 1


class _RecordView:
    """A record with its virtual fields, for WHERE evaluation, without copying it."""

    def __init__(self, org: SalesforceOrg, obj: str):
        self.org, self.obj = org, obj
        self.table = org.tables[obj]
        self.booleans = frozenset(name for name, spec in org.schema[obj].items() if spec.type == "boolean")
        self.record_id = ""
        self.record: dict[str, Any] = {}

    def at(self, record_id: str) -> "_RecordView":
        self.record_id, self.record = record_id, self.table.records[record_id]
        return self

    def get(self, name: str, default: Any = None) -> Any:
        if "." in name:
            value = self.org.value(self.obj, self.record_id, name)
            return False if value is None and self.org.field_type(self.obj, name) == "boolean" else value
        if name == "Id":
            return self.record_id
        if name in ("SystemModstamp", "LastModifiedDate"):
            return self.table.modified[self.record_id]
        if name == "CreatedDate":
            return self.table.created[self.record_id]
        if name in self.booleans:
            return bool(self.record.get(name, False))
        return self.record.get(name, default)


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _plain(value: Any) -> Any:
    return value


def _numeric(value: Any) -> bool:
    try:
        float(value)
        return True
    except (TypeError, ValueError):
        return False


def _save_error(code: str, message: str, fields: list[str]) -> dict[str, Any]:
    return {"statusCode": code, "message": message, "fields": fields}


def _default_message(code: str, record_id: str) -> str:
    if code == "UNABLE_TO_LOCK_ROW":
        return f"unable to obtain exclusive access to this record or 1 records: {record_id}"
    return f"{code} (injected by the sandbox) for {record_id}"


def _rolled_back(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for result in results:
        if result["success"]:
            rolled = {k: v for k, v in result.items() if k != "errors"}
            rolled["success"] = False
            rolled["errors"] = [_save_error(
                "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                "Record rolled back because not all records were valid and the request was using AllOrNone header",
                [])]
            out.append(rolled)
        else:
            out.append(result)
    return out


def _identity_url(user_id: str) -> str:
    return f"https://login.salesforce.com/id/{ORG_ID}/{user_id}"


def _oauth_error(error: str, description: str) -> Response:
    return json_response({"error": error, "error_description": description}, 400)


def _xml_value(text: str, tag: str) -> str | None:
    match = re.search(rf"<(?:\w+:)?{tag}>(.*?)</(?:\w+:)?{tag}>", text, re.DOTALL)
    return match.group(1) if match else None


_SOAP_OK = """<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns="urn:partner.soap.sforce.com" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><loginResponse><result><metadataServerUrl>{server}</metadataServerUrl><passwordExpired>false</passwordExpired><sandbox>true</sandbox><serverUrl>{server}</serverUrl><sessionId>{session}</sessionId><userId>{user}</userId><userInfo><organizationId>{org}</organizationId><userName>{username}</userName></userInfo></result></loginResponse></soapenv:Body></soapenv:Envelope>"""

_SOAP_FAULT = """<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:sf="urn:fault.partner.soap.sforce.com" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><soapenv:Fault><faultcode>sf:INVALID_LOGIN</faultcode><faultstring>INVALID_LOGIN: Invalid username, password, security token; or user locked out.</faultstring><detail><sf:LoginFault xsi:type="sf:LoginFault"><sf:exceptionCode>INVALID_LOGIN</sf:exceptionCode><sf:exceptionMessage>Invalid username, password, security token; or user locked out.</sf:exceptionMessage></sf:LoginFault></detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>"""
