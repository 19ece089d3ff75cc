"""Salesforce connector on simple-salesforce 1.12 (REST query/queryMore, Bulk API 2.0 query,
sObject Collections).

Streams, one small class each:

- ``SoqlPager``: ``SELECT <mapped fields> FROM Lead WHERE SystemModstamp >= since AND
  SystemModstamp < until ORDER BY SystemModstamp, Id``, following ``nextRecordsUrl`` (2,000 a
  batch), split into pages of ``page_size`` for the flow. Every value in every SOQL statement is
  bound with ``simple_salesforce.format_soql`` or its ``quote_soql_value`` (quoted and escaped); field and object names come
  from the validated mapping and are checked against an allow-list pattern.
- ``BulkQuery``: a window whose first REST response says ``totalSize > bulk_threshold`` keeps that
  first batch and reads the rest with one Bulk API 2.0 query job (same SELECT and WHERE, no
  ORDER BY: Bulk 2.0 refuses it): create, poll with backoff, CSV results of ``bulk_max_records``
  rows a request following ``Sforce-Locator``. Rows already read by REST are skipped; CSV values
  are typed as the REST JSON has them. These pages are in Id order and carry no cursor (the flow
  moves the watermark to ``until`` only after a completed run). ``fetch_by_ids`` and task lookups
  stay REST.
- writes: ``PATCH composite/sobjects`` (200 records, ``allOrNone=false``) via ``sf.restful``;
  per-record ``UNABLE_TO_LOCK_ROW`` is retried in a follow-up batch, other per-record errors are
  returned as failures naming the record and the fields.
- tasks: ``Task`` records with ``WhoId``, looked up by ``Leadflow_Task_Key__c IN (...)`` and written by
  the sObject Collections upsert on that External ID + Unique field
  (``PATCH composite/sobjects/Task/Leadflow_Task_Key__c``, 200 records, ``allOrNone=false``).
- native signals (``signals: native``): the lead's activities come with the lead query itself, as
  parent-to-child subqueries (``(SELECT Id, CompletedDateTime, ... FROM Tasks WHERE TaskSubtype =
  'Call' AND Status = 'Completed')``, ``Events``, ``CampaignMembers`` with ``Campaign.Type`` and
  ``Campaign.Name``): no call of their own, though their records count toward the query's
  batches of 2,000 (REST batches are regrouped into full pages). Bulk API 2.0 takes no subqueries, so for the bulk rows the
  campaign responses come from one semi-join query for the whole window (``SELECT ... FROM
  CampaignMember WHERE LeadId IN (SELECT Id FROM Lead WHERE <window>) AND HasResponded = true``),
  and calls and meetings from one ``SELECT ... FROM Task WHERE WhoId IN (...)`` per child object and
  200 leads that have a ``LastActivityDate``. Outcome
  fields of the converted opportunity are child-to-parent relationship fields of the lead
  (``ConvertedOpportunity.StageName``), read in the same query (REST and bulk).

Own writes (``skip_own_writes``, off by default): leadflow's write-back bumps ``SystemModstamp``,
so the next window re-reads every lead it wrote ("echoes"; a collection update returns no
modification time to mark them with). With the setting on, window reads (REST and the bulk job,
one builder) add ``AND LastModifiedById != <integration user>``: a lead whose last change is
leadflow's own is what leadflow read plus what it wrote; a person's later edit makes them the
last modifier, so the lead is read. The user id is ``integration_user_id`` when pinned, else asked
once per connector of ``GET /services/oauth2/userinfo`` (endpoint ``userinfo``). ``fetch_by_ids``
and task lookups are not filtered. **This requires a dedicated integration user**: leads last
changed by anything else logged in as the same user (a marketing-automation sync, web-to-lead
under the same API user) would never be read. Gaps, as with HubSpot's echo marks: an edit made
between leadflow's read and its write of the same lead; and a run that crashes after a page's
write-back but before its tasks and state: those leads are not re-read until someone edits them.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import requests
from pydantic import SecretStr
from simple_salesforce import Salesforce, format_soql
from simple_salesforce.format import quote_soql_value
from simple_salesforce.util import exception_handler
from sqlalchemy import Engine

from state import leads as state
from state.outcomes import record_outcomes
from connectors.crm.base import LeadUpdate, Page, TaskSpec, WriteResult
from connectors.crm.common import CrmConnectorBase, KeyedTask, chunked
from connectors.crm.convert import activity_event, is_blank, parse_datetime
from connectors.ratelimit import ApiBudget, CallMeter, PrefectGlobalLimiter
from connectors.retry import RECORD_RETRY_ROUNDS, Action, RetryPolicy, classify, error_message, is_request_error
from connectors.crm.salesforce_login import client_credentials_login, login_base_url, password_login
from leadflow import settings
from leadflow.redaction import without_values
from mappings import ActivityMapping, CrmMapping, load_mapping

log = logging.getLogger("leadflow.connectors.crm.salesforce")

API_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
FIELD_PATH = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z][A-Za-z0-9_]*){0,4}$")  # Field or Rel.Field
USER_ID = re.compile(r"^005[A-Za-z0-9]{12}(?:[A-Za-z0-9]{3})?$")
PRIORITY = {"high": "High", "normal": "Normal", "low": "Low"}
BULK_POLL_CAP = 10.0  # seconds between two polls of a Bulk API 2.0 job, at most


class SalesforceConfigError(ValueError):
    pass


class BulkQueryError(RuntimeError):
    """A Bulk API 2.0 query job that failed, was aborted or did not finish in time (names the job)."""


@dataclass
class SalesforceConfig:
    instance_url: str
    username: str | None = None
    password: SecretStr | None = None
    security_token: SecretStr | None = None
    client_id: str | None = None
    client_secret: SecretStr | None = None
    session_id: SecretStr | None = None
    domain: str | None = None  # SALESFORCE_DOMAIN: login | test | My Domain host | URL; None: from instance_url
    version: str = "59.0"
    timeout: float = 60.0
    max_calls: int | None = None
    daily_share: float | None = None
    fleet_rate_limit: str | None = None  # a Prefect global concurrency limit name (opt-in)
    page_size: int = settings.SALESFORCE_QUERY_PAGE_SIZE  # one query batch: collections of 200 stay full
    collection_size: int = settings.SALESFORCE_COLLECTION_SIZE
    id_batch: int = 200
    bulk_threshold: int | None = settings.SALESFORCE_BULK_THRESHOLD  # None/0: REST paging only
    bulk_max_records: int = 10_000  # rows per Bulk API 2.0 results request
    bulk_poll_interval: float = 1.0  # first wait between job polls; doubles up to BULK_POLL_CAP
    bulk_timeout: float = 1800.0  # a job not complete by then is aborted
    skip_own_writes: bool = False  # window reads leave out leads last modified by the integration user
    integration_user_id: str | None = None  # that user; None: asked of the userinfo endpoint
    session_factory: Callable[[], requests.Session] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.integration_user_id is not None:
            self.integration_user_id = checked_user_id(self.integration_user_id,
                                                       "SalesforceConfig.integration_user_id")

    @property
    def can_login(self) -> bool:
        return bool((self.username and self.password) or (self.client_id and self.client_secret))


def _name(value: str) -> str:
    if not API_NAME.match(value):
        raise SalesforceConfigError(f"not a Salesforce API name: {value!r}")
    return value


def _path(value: str) -> str:
    """A field name or a child-to-parent relationship path (``ConvertedOpportunity.StageName``)."""
    if not FIELD_PATH.match(value):
        raise SalesforceConfigError(f"not a Salesforce field path: {value!r}")
    return value


def flatten(record: dict[str, Any]) -> dict[str, Any]:
    """A REST record with its parent relationships as dotted keys (``{"Campaign": {"Type": ...}}``
    -> ``{"Campaign.Type": ...}``, a null parent -> nothing); child subquery results (dicts with
    ``records``) and ``attributes`` are left out."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        if key == "attributes":
            continue
        if isinstance(value, dict):
            if "records" in value:
                continue
            for sub_key, sub_value in flatten(value).items():
                out[f"{key}.{sub_key}"] = sub_value
            continue
        out[key] = value
    return out


@dataclass(frozen=True)
class ChildQuery:
    """The activities of one child relationship of the lead (``Tasks``, ``Events``, ``CampaignMembers``)."""

    relationship: str
    object: str
    link_field: str
    fields: tuple[str, ...]
    where: tuple[tuple[str, tuple[str, ...]], ...]  # conditions every activity of this relationship shares
    activities: tuple[ActivityMapping, ...]

    def condition(self) -> str:
        """The shared conditions, every value quoted and escaped (``quote_soql_value``)."""
        parts = []
        for name, values in self.where:
            if len(values) == 1 and values[0].lower() in ("true", "false"):
                parts.append(f"{name} = {quote_soql_value(values[0].lower() == 'true')}")
            else:
                parts.append(f"{name} IN {quote_soql_value(list(values))}")
        return " AND ".join(parts)

    def subquery(self) -> str:
        clause = self.condition()
        where = f" WHERE {clause}" if clause else ""
        return f"(SELECT {', '.join(self.fields)} FROM {self.relationship}{where})"

    def by_semi_join(self, leads: str) -> str:
        """The children of the leads ``leads`` (a ``SELECT Id FROM Lead ...``) selects."""
        clause = self.condition()
        extra = f" AND {clause}" if clause else ""
        return f"SELECT {', '.join(self.fields)} FROM {self.object} WHERE {self.link_field} IN ({leads}){extra}"

    def by_leads(self, lead_ids: list[str]) -> str:
        clause = self.condition()
        extra = f" AND {clause}" if clause else ""
        return (f"SELECT {', '.join(self.fields)} FROM {self.object} "
                f"WHERE {self.link_field} IN {quote_soql_value(lead_ids)}{extra}")


def child_queries(activities: list[ActivityMapping]) -> list[ChildQuery]:
    """One ``ChildQuery`` per relationship, its fields and shared conditions from the mapping."""
    groups: dict[str, list[ActivityMapping]] = {}
    for activity in activities:
        if not activity.relationship or not activity.link_field:
            raise SalesforceConfigError(f"native activity {activity.object}/{activity.event}: "
                                        "relationship and link_field are required on Salesforce")
        groups.setdefault(activity.relationship, []).append(activity)
    out = []
    for relationship, group in groups.items():
        first = group[0]
        shared = [(name, tuple(values)) for name, values in first.where.items()
                  if all(a.where.get(name) == values for a in group)]
        names = {"Id", first.link_field} | {a.time_field for a in group} | {f for a in group for f in a.where}
        names |= {a.campaign_field for a in group if a.campaign_field}
        out.append(ChildQuery(_name(relationship), _name(first.object), _name(first.link_field),
                              tuple(_path(n) for n in sorted(names)), tuple(shared), tuple(group)))
    return out


def checked_user_id(value: str, source: str) -> str:
    """``value`` when it is a Salesforce User id (15 or 18 characters, prefix ``005``); ``source``
    names where it came from in the error."""
    text = value.strip()
    if not USER_ID.match(text):
        raise SalesforceConfigError(f"{source} must be a Salesforce User id (15 or 18 letters and digits "
                                    f"starting with 005); got {value!r}")
    return text


def get_raw(sf: Salesforce, url: str, name: str, timeout: float,
            params: dict[str, Any] | None = None) -> requests.Response:
    """``GET url`` on ``sf``'s session with its bearer token; API usage recorded and errors raised
    as simple-salesforce does for its own calls."""
    response = sf.session.get(url, headers=sf.headers, params=params, timeout=timeout)
    limit_info = response.headers.get("Sforce-Limit-Info")
    if limit_info:
        sf.api_usage = sf.parse_api_usage(limit_info)  # read by _sf_call, as after a REST call
    if response.status_code >= 300:
        exception_handler(response, name=name)
    return response


def connect(config: SalesforceConfig, prefer_login: bool = False) -> Salesforce:
    """A simple_salesforce client for ``config``: its session id, or a fresh login (username-password,
    else client credentials) at ``config.domain`` (``connectors/crm/salesforce_login.py``).
    A refused login raises ``SalesforceLoginRefused`` naming the user, never the password."""
    session = config.session_factory() if config.session_factory else requests.Session()
    if config.session_id and not (prefer_login and config.can_login):
        return Salesforce(instance_url=config.instance_url, session_id=config.session_id.get_secret_value(),
                          session=session, version=config.version)
    base_url = login_base_url(config.domain, config.instance_url)
    if config.username and config.password:
        token = config.security_token.get_secret_value() if config.security_token else ""
        session_id, instance = password_login(base_url, config.username, config.password.get_secret_value(),
                                              token, config.version, session)
    elif config.client_id and config.client_secret:
        session_id, instance = client_credentials_login(base_url, config.client_id,
                                                        config.client_secret.get_secret_value(), session)
    else:
        raise SalesforceConfigError("no Salesforce credentials: set a session id, username/password or client id/secret")
    return Salesforce(instance=instance, session_id=session_id, session=session, version=config.version)


class SoqlPager:
    """Raw record batches of one SOQL query, following nextRecordsUrl."""

    def __init__(self, connector: "SalesforceConnector"):
        self.connector = connector

    def batches(self, soql: str) -> Iterator[list[dict[str, Any]]]:
        return self.follow(self.first(soql))

    def first(self, soql: str) -> dict[str, Any]:
        """The query's first response (``totalSize``, ``done``, the first batch, ``nextRecordsUrl``)."""
        return self.connector._sf_call("query", lambda sf: sf.query(soql, timeout=self.connector.config.timeout))

    def follow(self, data: dict[str, Any]) -> Iterator[list[dict[str, Any]]]:
        """The batch of ``data``, then every batch after it."""
        while True:
            records = data.get("records") or []
            if records:
                yield records
            if data.get("done", True) or not data.get("nextRecordsUrl"):
                return
            next_url = data["nextRecordsUrl"]
            data = self.connector._sf_call(
                "query_more", lambda sf: sf.query_more(next_url, identifier_is_url=True, timeout=self.connector.config.timeout)
            )


class BulkQuery:
    """Raw record batches of one Bulk API 2.0 query job (one batch per results request)."""

    def __init__(self, connector: "SalesforceConnector"):
        self.connector = connector

    def batches(self, soql: str) -> Iterator[list[dict[str, Any]]]:
        job_id = self._create(soql)
        self._wait(job_id)
        yield from self._results(job_id)

    def _create(self, soql: str) -> str:
        body = {"operation": "query", "query": soql, "contentType": "CSV", "columnDelimiter": "COMMA",
                "lineEnding": "LF"}
        job = self.connector._sf_call("bulk.create", lambda sf: sf.restful("jobs/query", method="POST", json=body,
                                                                     timeout=self.connector.config.timeout))
        log.info("salesforce: Bulk API 2.0 query job %s created", job["id"])
        return str(job["id"])

    def _poll(self, job_id: str) -> dict[str, Any]:
        return self.connector._sf_call("bulk.poll", lambda sf: sf.restful(f"jobs/query/{job_id}",
                                                                    timeout=self.connector.config.timeout))

    def _wait(self, job_id: str) -> None:
        """Until the job is ``JobComplete``; raises BulkQueryError when it fails or times out (aborted)."""
        config = self.connector.config
        deadline = time.monotonic() + config.bulk_timeout
        wait = config.bulk_poll_interval
        while True:
            job = self._poll(job_id)
            state = job.get("state")
            if state == "JobComplete":
                return
            if state in ("Failed", "Aborted"):
                raise BulkQueryError(f"salesforce: Bulk API 2.0 query job {job_id} ended {state}: "
                                     f"{job.get('errorMessage') or 'no errorMessage given'}")
            left = deadline - time.monotonic()
            if left <= 0:
                self._abort(job_id)
                raise BulkQueryError(f"salesforce: Bulk API 2.0 query job {job_id} not complete after "
                                     f"{config.bulk_timeout:g} s (state {state}): aborted")
            self.connector.retry.sleep(min(wait, left))
            wait = min(wait * 2, BULK_POLL_CAP)

    def _abort(self, job_id: str) -> None:
        try:
            self.connector._sf_call("bulk.abort", lambda sf: sf.restful(f"jobs/query/{job_id}", method="PATCH",
                                                                  json={"state": "Aborted"},
                                                                  timeout=self.connector.config.timeout))
        except Exception as exc:  # noqa: BLE001 - the timeout is the error to report
            log.warning("salesforce: could not abort Bulk API 2.0 query job %s: %s", job_id, error_message(exc))

    def _results(self, job_id: str) -> Iterator[list[dict[str, Any]]]:
        locator: str | None = None
        while True:
            text, locator = self.connector._sf_call("bulk.results",
                                            lambda sf, at=locator: self._result_set(sf, job_id, at))
            yield csv_records(text, self.connector.field_kinds)
            if not locator or locator == "null":
                return

    def _result_set(self, sf: Salesforce, job_id: str, locator: str | None) -> tuple[str, str | None]:
        """(CSV text, next locator) of one results request; errors raised as simple-salesforce does."""
        params: dict[str, Any] = {"maxRecords": self.connector.config.bulk_max_records}
        if locator:
            params["locator"] = locator
        path = f"jobs/query/{job_id}/results"
        response = get_raw(sf, sf.base_url + path, path, self.connector.config.timeout, params)
        return response.content.decode("utf-8-sig"), response.headers.get("Sforce-Locator")


def csv_records(text: str, kinds: dict[str, str]) -> list[dict[str, Any]]:
    """Bulk API 2.0 CSV rows as records with the values the REST API's JSON would hold."""
    rows = csv.reader(io.StringIO(text, newline=""))
    header = next(rows, None)
    if header is None:
        return []
    return [{name: rest_value(kinds.get(name), value) for name, value in zip(header, row)} for row in rows]


def rest_value(kind: str | None, text: str) -> Any:
    """One CSV value as REST has it: empty is null, bools and numbers typed, datetimes ``+0000``."""
    if text == "":
        return None
    if kind == "bool":
        return text.lower() == "true"
    if kind == "number":
        return _json_number(text)
    if kind == "datetime" and text.endswith("Z"):
        return text[:-1] + "+0000"
    return text


def _json_number(text: str) -> Any:
    """``12.0`` -> 12.0, ``250`` -> 250 (as the JSON parser reads them); anything else stays text."""
    try:
        number = json.loads(text)
    except ValueError:
        return text
    return number if isinstance(number, (int, float)) and not isinstance(number, bool) else text


def field_kinds(mapping: CrmMapping) -> dict[str, str]:
    """CRM field -> value type (``bool``, ``number``, ``datetime``, ...) of every field a read fetches."""
    kinds = {fm.field: fm.type for fm in mapping.fields.values()}
    kinds[mapping.modified_field] = "datetime"
    for event in mapping.property_events().values():
        kinds[event.field] = "datetime"
        if event.count_field:
            kinds[event.count_field] = "number"
    return kinds


class SalesforceConnector(CrmConnectorBase):
    crm = "salesforce"
    task_lookup_batch = 200  # a SOQL IN of 200 keys stays well inside the URL limit
    task_create_batch = 200

    def __init__(self, config: SalesforceConfig, engine: Engine, mapping: CrmMapping | None = None,
                 retry: RetryPolicy | None = None, meter: CallMeter | None = None, mark_reads: bool = True,
                 sf: Salesforce | None = None):
        mapping = mapping or load_mapping("salesforce")
        meter = meter or CallMeter(
            budget=ApiBudget(max_calls=config.max_calls, daily_share=config.daily_share),
            fleet=PrefectGlobalLimiter(config.fleet_rate_limit) if config.fleet_rate_limit else None,
        )
        super().__init__(engine, mapping, meter, retry or RetryPolicy(), mark_reads)
        self.config = config
        self.lead_type = _name(mapping.objects["lead"])
        self.task_type = _name(mapping.objects["task"])
        write_only = {fm.field for fm in mapping.fields.values() if not fm.reads}
        fetched = (set(mapping.crm_fields("lead")) | set(mapping.crm_fields("company")) | {"Id"}) - write_only
        # write-only fields are not read back (a second long-text field would cut query batches
        # from 2,000 rows to 200); plan_update compares them with what leadflow last wrote
        self.fields = [_path(f) for f in sorted(fetched)]
        self.children = child_queries(mapping.activities())
        self._subqueries = [child.subquery() for child in self.children]
        self.field_kinds = field_kinds(mapping)
        self.modified = _name(mapping.modified_field)
        self.task_key = _name(mapping.tasks.key_field)
        self._sf = sf
        self._own_user_id = config.integration_user_id
        self.reauthentications = 0

    def __repr__(self) -> str:
        return f"SalesforceConnector(instance_url={self.config.instance_url!r})"

    # transport ------------------------------------------------------------------------------------
    @property
    def sf(self) -> Salesforce:
        if self._sf is None:
            self._sf = self._call("login", lambda: connect(self.config))
        return self._sf

    def _reauth(self) -> None:
        self.reauthentications += 1
        self._sf = self._call("login", lambda: connect(self.config, prefer_login=True))

    def _sf_call(self, endpoint: str, fn: Callable[[Salesforce], Any], idempotent: bool = True) -> Any:
        def run() -> Any:
            sf = self.sf
            try:
                return fn(sf)
            finally:
                self.meter.observe_salesforce_usage(getattr(sf, "api_usage", None))

        return self._call(endpoint, run, reauth=self._reauth if self.config.can_login else None,
                          idempotent=idempotent)

    def own_user_id(self) -> str:
        """The integration user's id: ``integration_user_id``, else the session's user per
        ``GET /services/oauth2/userinfo`` (one call per connector)."""
        if self._own_user_id is None:
            info = self._sf_call("userinfo", self._userinfo)
            self._own_user_id = checked_user_id(str(info.get("user_id") or ""), "the userinfo endpoint's user_id")
            log.info("salesforce: window reads skip leads last modified by %s (this session's user)",
                     self._own_user_id)
        return self._own_user_id

    def _userinfo(self, sf: Salesforce) -> dict[str, Any]:
        url = f"https://{sf.sf_instance}/services/oauth2/userinfo"
        return get_raw(sf, url, "userinfo", self.config.timeout).json()

    # reads ----------------------------------------------------------------------------------------
    def _select(self, with_children: bool = True) -> str:
        """The lead SELECT; ``with_children``: with the activity subqueries (REST only)."""
        items = list(self.fields)
        if with_children:
            items += self._subqueries
        return f"SELECT {', '.join(items)} FROM {self.lead_type}"

    def window_soql(self, since: datetime | None, until: datetime | None, ordered: bool = True,
                    select: str | None = None) -> str:
        """The window's SOQL; ``ordered=False`` for a Bulk API 2.0 job (no ORDER BY there). With
        ``skip_own_writes``, leads last modified by the integration user are left out. ``select``
        replaces the SELECT (``SELECT Id FROM Lead``, for a semi-join)."""
        where: list[str] = []
        args: list[Any] = []
        if since is not None:
            where.append(f"{self.modified} >= {{}}")
            args.append(_utc(since))
        if until is not None:
            where.append(f"{self.modified} < {{}}")
            args.append(_utc(until, ceil=True))
        if self.config.skip_own_writes:
            where.append("LastModifiedById != {}")
            args.append(self.own_user_id())
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        order = f" ORDER BY {self.modified}, Id" if ordered else ""
        select = (select or self._select(with_children=ordered)).replace("{", "{{").replace("}", "}}")
        return format_soql(f"{select}{clause}{order}", *args)

    def iter_pages(self, since: datetime | None, until: datetime | None) -> Iterator[Page]:
        """The window by REST paging; above ``bulk_threshold`` leads, the first REST batch and then
        one Bulk API 2.0 job for the rest (module docstring)."""
        pager = SoqlPager(self)
        first = pager.first(self.window_soql(since, until))
        if not self._bulk_worth_it(first):
            yield from self._window_pages(_regrouped(pager.follow(first), self.config.page_size))
            return
        batch = first.get("records") or []
        log.info("salesforce: %d leads in the window (bulk_threshold %d): %d by REST, the rest by Bulk API 2.0",
                 first["totalSize"], self.config.bulk_threshold, len(batch))
        yield from self._window_pages([batch])
        read = {str(r["Id"]) for r in batch}
        bulk = BulkQuery(self).batches(self.window_soql(since, until, ordered=False))
        fresh = ([r for r in rows if str(r["Id"]) not in read] for rows in bulk)
        prefetched = self._window_children(since, until)
        yield from self._window_pages(_regrouped(fresh, self.config.page_size), in_id_order=True,
                                      prefetched=prefetched)

    def _bulk_worth_it(self, first: dict[str, Any]) -> bool:
        threshold = self.config.bulk_threshold
        return bool(threshold) and not first.get("done", True) and int(first.get("totalSize") or 0) > threshold

    def _window_pages(self, batches: Iterable[list[dict[str, Any]]], in_id_order: bool = False,
                      prefetched: dict[str, dict[str, list[dict[str, Any]]]] | None = None) -> Iterator[Page]:
        for batch in batches:
            for records in chunked(batch, self.config.page_size):
                page = self._page(records, skip_unchanged=True, children_inline=not in_id_order,
                                  prefetched=prefetched)
                if page is None:
                    continue
                if in_id_order:
                    page.cursor = None  # not in modification order: no progress point
                yield page

    def fetch_by_ids(self, ids: list[str]) -> Iterator[Page]:
        """Leads by id (``Id IN (...)`` via format_soql); ids that no longer exist leave pending."""
        for chunk in chunked([str(i) for i in ids], self.config.id_batch):
            select = self._select().replace("{", "{{").replace("}", "}}")
            soql = format_soql(f"{select} WHERE Id IN {{}} ORDER BY {self.modified}, Id", chunk)
            records = [r for batch in SoqlPager(self).batches(soql) for r in batch]
            found = {str(r["Id"]) for r in records}
            missing = [i for i in chunk if i not in found and i[:15] not in {f[:15] for f in found}]
            if missing:
                state.clear_pending(self.engine, self.crm, missing)
            page = self._page(records, skip_unchanged=False)
            if page is not None:
                page.cursor = None
                yield page

    def _page(self, records: list[dict[str, Any]], skip_unchanged: bool, children_inline: bool = True,
              prefetched: dict[str, dict[str, list[dict[str, Any]]]] | None = None) -> Page | None:
        modified = {str(r["Id"]): parse_datetime(r.get(self.modified)) for r in records}
        cursor = max((m for m in modified.values() if m), default=None)
        if skip_unchanged:
            unchanged = self._unchanged(modified)
            records = [r for r in records if str(r["Id"]) not in unchanged]
        if not records:
            return None
        native = self._native(records, children_inline, prefetched or {})
        page = Page(leads=[], cursor=cursor)
        for record in records:
            rid = str(record["Id"])
            self._add_record(page, rid, flatten(record), native=native.get(rid))
        self._mark_read(page)
        if self.mark_reads:
            record_outcomes(self.engine, self.crm, page.leads)
        return page

    # native activities ----------------------------------------------------------------------------
    def _native(self, records: list[dict[str, Any]], inline: bool,
                prefetched: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, dict[str, Any]]:
        """lead id -> {"events", "campaign"} from its child activity records (subquery results on
        the records, the window's prefetched rows, or queries by lead id)."""
        if not self.children:
            return {}
        rows: dict[str, list[tuple[ChildQuery, dict[str, Any]]]] = {}
        for child in self.children:
            if inline:
                found: Iterable[tuple[str, dict[str, Any]]] = self._inline_children(child, records)
            elif child.relationship in prefetched:
                known = prefetched[child.relationship]
                found = ((str(r["Id"]), row) for r in records for row in known.get(str(r["Id"])[:15], []))
            else:
                found = self._queried_children(child, records)
            for lead_id, child_row in found:
                rows.setdefault(lead_id, []).append((child, child_row))
        now = datetime.now(timezone.utc)
        out: dict[str, dict[str, Any]] = {}
        for lead_id, items in rows.items():
            events, campaigns = [], []
            for child, row in items:
                for activity in child.activities:
                    event = activity_event(self.crm, activity, str(row.get("Id")), row, now)
                    if event is None:
                        continue
                    events.append(event)
                    if activity.campaign_field and row.get(activity.campaign_field):
                        campaigns.append((event["at"], str(row[activity.campaign_field])))
            out[lead_id] = {"events": events, "campaign": max(campaigns)[1] if campaigns else None}
        return out

    def _window_children(self, since: datetime | None, until: datetime | None
                         ) -> dict[str, dict[str, list[dict[str, Any]]]]:
        """relationship -> lead id (15 characters) -> flat child records, for the child objects with
        no gate field (campaign responses): one semi-join query for the whole bulk window
        (``LeadId IN (SELECT Id FROM Lead WHERE <window>)``), instead of one per 200 leads; the
        rows held are the window's matching children only (responded members)."""
        out: dict[str, dict[str, list[dict[str, Any]]]] = {}
        leads = self.window_soql(since, until, ordered=False, select=f"SELECT Id FROM {self.lead_type}")
        for child in self.children:
            if any(a.gate_field for a in child.activities):
                continue
            by_lead = out.setdefault(child.relationship, {})
            for row in self._child_rows(child, leads=leads):
                by_lead.setdefault(str(row.get(child.link_field) or "")[:15], []).append(flatten(row))
        return out

    def _inline_children(self, child: ChildQuery, records: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
        """(lead id, flat child record) from the subquery results on each lead record; a child
        result with more rows than one response holds is followed with queryMore."""
        for record in records:
            result = record.get(child.relationship)
            if not result:
                continue
            for batch in SoqlPager(self).follow(result):
                for row in batch:
                    yield str(record["Id"]), flatten(row)

    def _queried_children(self, child: ChildQuery, records: list[dict[str, Any]]
                          ) -> Iterator[tuple[str, dict[str, Any]]]:
        """(lead id, flat child record), one query per ``id_batch`` leads (pages read by Bulk API);
        only leads whose gate field is set when every activity of the relationship has one."""
        lead_ids = [str(r["Id"]) for r in records]
        gates = {a.gate_field for a in child.activities}
        if None not in gates:
            open_ids = {str(r["Id"]) for r in records if any(not is_blank(r.get(g)) for g in gates)}
            lead_ids = [i for i in lead_ids if i in open_ids]
        wanted = {i[:15]: i for i in lead_ids}
        for chunk in chunked(lead_ids, self.config.id_batch):
            for row in self._child_rows(child, chunk):
                lead_id = wanted.get(str(row.get(child.link_field) or "")[:15])
                if lead_id is not None:
                    yield lead_id, flatten(row)

    def _child_rows(self, child: ChildQuery, lead_ids: list[str] | None = None,
                    leads: str | None = None) -> list[dict[str, Any]]:
        """The child records of up to ``id_batch`` leads, or of the leads a ``SELECT Id FROM Lead``
        query selects (a semi-join): one query and its queryMore pages."""
        soql = child.by_leads(lead_ids or []) if leads is None else child.by_semi_join(leads)
        return [row for batch in SoqlPager(self).batches(soql) for row in batch]

    # writes ---------------------------------------------------------------------------------------
    def _collection(self, method: str, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        body = {"allOrNone": False, "records": records}
        endpoint = "composite.update" if method == "PATCH" else "composite.create"
        result = self._sf_call(endpoint, lambda sf: sf.restful("composite/sobjects", method=method, json=body,
                                                                timeout=self.config.timeout),
                               idempotent=method != "POST")
        return list(result or [])

    def _save(self, method: str, records: list[dict[str, Any]], keys: list[str]) -> tuple[dict[str, str], dict[str, str]]:
        """Send records in collections of 200; per-record UNABLE_TO_LOCK_ROW goes to a follow-up
        batch. Returns (key -> saved id, key -> failure)."""
        saved: dict[str, str] = {}
        failed: dict[str, str] = {}
        todo = list(zip(keys, records))
        for round_no in range(RECORD_RETRY_ROUNDS + 1):
            locked: list[tuple[str, dict[str, Any]]] = []
            for chunk in chunked(todo, self.config.collection_size):
                try:
                    results = self._collection(method, [r for _, r in chunk])
                except Exception as exc:  # noqa: BLE001
                    decision = classify(exc)
                    if decision.action is Action.RETRY and method == "POST":
                        raise  # a create whose outcome is unknown: the caller looks it up first
                    if decision.action is not Action.RETRY and not is_request_error(exc):
                        raise  # quota, expired session, permissions: no record can land
                    for key, record in chunk:
                        failed[key] = without_values(error_message(exc), _sent_values(record))
                    continue
                for (key, record), outcome in zip(chunk, results):
                    if outcome.get("success"):
                        saved[key] = str(outcome.get("id") or record.get("id"))
                        continue
                    errors = outcome.get("errors") or []
                    codes = [str(e.get("statusCode")) for e in errors]
                    if "UNABLE_TO_LOCK_ROW" in codes and round_no < RECORD_RETRY_ROUNDS:
                        locked.append((key, record))
                        continue
                    failed[key] = without_values("; ".join(
                        f"{','.join(e.get('fields') or []) or '-'}: {e.get('statusCode')}: {e.get('message')}"
                        for e in errors
                    ), _sent_values(record))[:500] or "failed without an error"
                for key, _ in chunk[len(results):]:
                    failed[key] = "no result returned for this record"
            if not locked:
                break
            self.retry.sleep(self.retry.base_wait * (2 ** round_no))
            todo = locked
        return saved, failed

    def read_current(self, obj: str, object_ids: list[str], fields: list[str]) -> dict[str, dict[str, Any]]:
        """Leads' ``fields`` as Salesforce holds them now (company fields live on the Lead too),
        ``id_batch`` ids per query."""
        columns = ", ".join(["Id", *(_name(f) for f in fields if f != "Id")])
        out: dict[str, dict[str, Any]] = {}
        for chunk in chunked([str(i) for i in object_ids], self.config.id_batch):
            soql = format_soql(f"SELECT {columns} FROM {self.lead_type} WHERE Id IN {{}}", chunk)
            for batch in SoqlPager(self).batches(soql):
                for record in batch:
                    out[str(record["Id"])] = {k: v for k, v in record.items() if k != "attributes"}
        return out

    def write_updates(self, updates: list[LeadUpdate]) -> WriteResult:
        merged: dict[str, dict[str, Any]] = {}
        owners: dict[str, list[str]] = {}
        for upd in updates:
            if not upd.fields:
                continue
            merged.setdefault(upd.object_id, {}).update(upd.fields)
            owners.setdefault(upd.object_id, []).append(upd.crm_id)
        records = [{"attributes": {"type": self.lead_type}, "id": oid, **fields} for oid, fields in merged.items()]
        _saved, failures = self._save("PATCH", records, list(merged))
        result = WriteResult()
        for oid, reason in failures.items():
            for crm_id in owners[oid]:
                result.failed[crm_id] = f"salesforce:{crm_id}: {reason}"
        result.succeeded = sorted({u.crm_id for u in updates} - set(result.failed))
        return result

    # tasks ----------------------------------------------------------------------------------------
    def _find_tasks(self, keys: list[str]) -> dict[str, str]:
        """SOQL on the key field (consistent, no index lag); the oldest task of a key wins."""
        soql = format_soql(f"SELECT Id, {self.task_key} FROM {self.task_type} WHERE {self.task_key} IN {{}} "
                           "ORDER BY CreatedDate, Id", keys)
        found: dict[str, str] = {}
        for batch in SoqlPager(self).batches(soql):
            for record in batch:
                if record.get(self.task_key) in keys:
                    found.setdefault(record[self.task_key], str(record["Id"]))
        return found

    def _task_record(self, spec: TaskSpec) -> dict[str, Any]:
        return {
            "attributes": {"type": self.task_type},
            "WhoId": spec.crm_id,
            "Subject": spec.subject[:255],
            "Description": spec.body,
            "ActivityDate": spec.due.isoformat(),
            "Priority": PRIORITY.get(spec.priority, "Normal"),
            "Status": "Not Started",
            self.task_key: spec.key,
        }

    def _upsert_collection(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``PATCH composite/sobjects/Task/<key field>``: idempotent, so the gate retries it."""
        body = {"allOrNone": False, "records": records}
        path = f"composite/sobjects/{self.task_type}/{self.task_key}"
        result = self._sf_call("composite.upsert", lambda sf: sf.restful(path, method="PATCH", json=body,
                                                                          timeout=self.config.timeout))
        return list(result or [])

    def _upsert_tasks(self, specs: list[TaskSpec]) -> tuple[dict[str, str], set[str], dict[str, str]]:
        """One collection upsert (up to 200); per-record UNABLE_TO_LOCK_ROW goes to a follow-up."""
        upserted: dict[str, str] = {}
        new: set[str] = set()
        failed: dict[str, str] = {}
        todo = list(specs)
        for round_no in range(RECORD_RETRY_ROUNDS + 1):
            try:
                results = self._upsert_collection([self._task_record(s) for s in todo])
            except Exception as exc:  # noqa: BLE001
                if not is_request_error(exc):
                    raise
                failed.update({s.key: error_message(exc) for s in todo})
                break
            locked: list[TaskSpec] = []
            for spec, outcome in zip(todo, results):
                codes = [str(e.get("statusCode")) for e in outcome.get("errors") or []]
                if outcome.get("success"):
                    upserted[spec.key] = str(outcome["id"])
                    if outcome.get("created"):
                        new.add(spec.key)
                elif "UNABLE_TO_LOCK_ROW" in codes and round_no < RECORD_RETRY_ROUNDS:
                    locked.append(spec)
                else:
                    failed[spec.key] = _save_errors(outcome)
            for spec in todo[len(results):]:
                failed[spec.key] = "no result returned for this task"
            if not locked:
                break
            self.retry.sleep(self.retry.base_wait * (2 ** round_no))
            todo = locked
        return upserted, new, failed

    def _complete_tasks(self, task_ids: list[str]) -> tuple[list[str], dict[str, str]]:
        records = [{"attributes": {"type": self.task_type}, "id": i, "Status": "Completed"} for i in task_ids]
        saved, failed = self._save("PATCH", records, task_ids)
        return sorted(saved), failed

    def _keyed_tasks(self) -> Iterator[KeyedTask]:
        soql = (f"SELECT Id, {self.task_key}, WhoId, IsClosed, CreatedDate FROM {self.task_type} "
                f"WHERE {self.task_key} != null ORDER BY {self.task_key}, CreatedDate, Id")
        for batch in SoqlPager(self).batches(soql):
            for record in batch:
                key = str(record[self.task_key])
                yield KeyedTask(task_id=str(record["Id"]), key=key,
                                lead_id=str(record.get("WhoId") or key.split(":", 1)[0]),
                                created=_sortable(record.get("CreatedDate")), closed=bool(record.get("IsClosed")))

    # setup ----------------------------------------------------------------------------------------
    def describe(self, sobject: str) -> dict[str, Any]:
        name = _name(sobject)
        return self._sf_call("describe", lambda sf: getattr(sf, name).describe())


def _sent_values(record: dict[str, Any]) -> dict[str, Any]:
    """The field values of a record sent in a collection (not its type or id)."""
    return {k: v for k, v in record.items() if k not in ("attributes", "id")}


def _regrouped(batches: Iterable[list[dict[str, Any]]], size: int) -> Iterator[list[dict[str, Any]]]:
    """Query batches or bulk result sets as full pages of ``size`` rows (the last may be smaller):
    a page's writes and follow-up reads then go out in full batches (a REST batch with activity
    subqueries holds fewer than 2,000 leads: their child records count toward its size)."""
    pending: list[dict[str, Any]] = []
    for batch in batches:
        pending.extend(batch)
        while len(pending) >= size:
            yield pending[:size]
            pending = pending[size:]
    if pending:
        yield pending


def _utc(moment: datetime, ceil: bool = False) -> datetime:
    """UTC; SOQL datetimes have whole seconds (format_soql drops the fraction), so an exclusive
    upper bound is rounded up to the next second rather than cut down."""
    moment = moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    moment = moment.astimezone(timezone.utc)
    if ceil and moment.microsecond:
        moment = moment.replace(microsecond=0) + timedelta(seconds=1)
    return moment


def _save_errors(outcome: dict[str, Any]) -> str:
    """A failed SaveResult/UpsertResult as one reason: fields, code and message of each error."""
    errors = outcome.get("errors") or []
    return "; ".join(f"{','.join(e.get('fields') or []) or '-'}: {e.get('statusCode')}: {e.get('message')}"
                     for e in errors)[:500] or "failed without an error"


def _sortable(stamp: Any) -> str:
    """A Salesforce datetime (``2024-01-05T12:34:56.000+0000``) as sortable UTC text."""
    moment = parse_datetime(stamp) if stamp else None
    return moment.astimezone(timezone.utc).isoformat() if moment else ""
