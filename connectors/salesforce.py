"""Salesforce connector on simple-salesforce 1.12 (REST query/queryMore, sObject Collections).

Streams, one small class each:

- ``SoqlPager``: ``SELECT <mapped fields> FROM Lead WHERE SystemModstamp >= since AND
  SystemModstamp < until ORDER BY SystemModstamp, Id``, following ``nextRecordsUrl`` (2,000 a
  batch), split into pages of ``page_size`` for the flow. Every value in every SOQL statement is
  bound with ``simple_salesforce.format_soql`` (quoted and escaped); field and object names come
  from the validated mapping and are checked against an allow-list pattern.
- writes: ``PATCH composite/sobjects`` (200 records, ``allOrNone=false``) via ``sf.restful``;
  per-record ``UNABLE_TO_LOCK_ROW`` is retried in a follow-up batch, other per-record errors are
  returned as failures naming the record and the fields.
- tasks: ``Task`` records with ``WhoId``, looked up by ``Leadflow_Task_Key__c IN (...)``.

TODO (Bulk API 2.0): backfills above a size could use ``/jobs/query``; the sandbox does not serve
it yet, so every read uses REST query paging.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import requests
from pydantic import SecretStr
from simple_salesforce import Salesforce, format_soql
from sqlalchemy import Engine

from connectors import state
from connectors.base import LeadUpdate, Page, TaskSpec, WriteResult
from connectors.common import CrmConnectorBase, chunked
from connectors.convert import parse_datetime
from connectors.ratelimit import ApiBudget, CallMeter, PrefectGlobalLimiter
from connectors.retry import Action, RetryPolicy, classify, error_message, is_request_error
from leadflow import settings
from mappings import CrmMapping, load_mapping

log = logging.getLogger("leadflow.connectors.salesforce")

API_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
PRIORITY = {"high": "High", "normal": "Normal", "low": "Low"}
LOCK_RETRY_ROUNDS = 3


class SalesforceConfigError(ValueError):
    pass


@dataclass
class SalesforceConfig:
    instance_url: str
    username: str | None = None
    password: SecretStr | None = None
    security_token: SecretStr | None = None
    client_id: str | None = None
    client_secret: SecretStr | None = None
    session_id: SecretStr | None = None
    domain: str | None = None  # login host prefix (login | test | My Domain); default: from instance_url
    version: str = "59.0"
    timeout: float = 60.0
    max_calls: int | None = None
    daily_share: float | None = None
    fleet_rate_limit: str | None = None  # a Prefect global concurrency limit name (opt-in)
    page_size: int = settings.SALESFORCE_QUERY_PAGE_SIZE  # one query batch: collections of 200 stay full
    collection_size: int = settings.SALESFORCE_COLLECTION_SIZE
    id_batch: int = 200
    session_factory: Callable[[], requests.Session] | None = field(default=None, repr=False)

    @property
    def can_login(self) -> bool:
        return bool((self.username and self.password) or (self.client_id and self.client_secret))


def _name(value: str) -> str:
    if not API_NAME.match(value):
        raise SalesforceConfigError(f"not a Salesforce API name: {value!r}")
    return value


def connect(config: SalesforceConfig, prefer_login: bool = False) -> Salesforce:
    """A simple_salesforce client for ``config`` (session id, username-password or client credentials)."""
    session = config.session_factory() if config.session_factory else None
    common: dict[str, Any] = {"version": config.version}
    if session is not None:
        common["session"] = session
    host = re.sub(r"^https?://", "", config.instance_url).rstrip("/")
    if config.session_id and not (prefer_login and config.can_login):
        return Salesforce(instance_url=config.instance_url, session_id=config.session_id.get_secret_value(), **common)
    domain = config.domain or (host.removesuffix(".salesforce.com") if host.endswith(".salesforce.com") else host)
    if config.username and config.password:
        return Salesforce(
            username=config.username,
            password=config.password.get_secret_value(),
            security_token=config.security_token.get_secret_value() if config.security_token else "",
            domain=domain,
            **common,
        )
    if config.client_id and config.client_secret:
        return Salesforce(
            consumer_key=config.client_id,
            consumer_secret=config.client_secret.get_secret_value(),
            domain=domain,
            **common,
        )
    raise SalesforceConfigError("no Salesforce credentials: set a session id, username/password or client id/secret")


class SoqlPager:
    """Raw record batches of one SOQL query, following nextRecordsUrl."""

    def __init__(self, connector: "SalesforceConnector"):
        self.c = connector

    def batches(self, soql: str) -> Iterator[list[dict[str, Any]]]:
        data = self.c._sf_call("query", lambda sf: sf.query(soql, timeout=self.c.config.timeout))
        while True:
            records = data.get("records") or []
            if records:
                yield records
            if data.get("done", True) or not data.get("nextRecordsUrl"):
                return
            next_url = data["nextRecordsUrl"]
            data = self.c._sf_call(
                "query_more", lambda sf: sf.query_more(next_url, identifier_is_url=True, timeout=self.c.config.timeout)
            )


class SalesforceConnector(CrmConnectorBase):
    crm = "salesforce"
    task_lookup_batch = 200  # a SOQL IN of 200 keys stays well inside the URL limit
    task_lookup_batch = 200
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
        self.fields = [_name(f) for f in sorted(fetched)]
        self.modified = _name(mapping.modified_field)
        self.task_key = _name(mapping.tasks.key_field)
        self._sf = sf
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

    # reads ----------------------------------------------------------------------------------------
    def _select(self) -> str:
        return f"SELECT {', '.join(self.fields)} FROM {self.lead_type}"

    def window_soql(self, since: datetime | None, until: datetime | None) -> str:
        where, args = [], []
        if since is not None:
            where.append(f"{self.modified} >= {{}}")
            args.append(_utc(since))
        if until is not None:
            where.append(f"{self.modified} < {{}}")
            args.append(_utc(until, ceil=True))
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        return format_soql(f"{self._select()}{clause} ORDER BY {self.modified}, Id", *args)

    def iter_pages(self, since: datetime | None, until: datetime | None) -> Iterator[Page]:
        for batch in SoqlPager(self).batches(self.window_soql(since, until)):
            for records in chunked(batch, self.config.page_size):
                page = self._page(records, skip_unchanged=True)
                if page is not None:
                    yield page

    def fetch_by_ids(self, ids: list[str]) -> Iterator[Page]:
        """Leads by id (``Id IN (...)`` via format_soql); ids that no longer exist leave pending."""
        for chunk in chunked([str(i) for i in ids], self.config.id_batch):
            soql = format_soql(f"{self._select()} WHERE Id IN {{}} ORDER BY {self.modified}, Id", chunk)
            records = [r for batch in SoqlPager(self).batches(soql) for r in batch]
            found = {str(r["Id"]) for r in records}
            missing = [i for i in chunk if i not in found and i[:15] not in {f[:15] for f in found}]
            if missing:
                state.clear_pending(self.engine, self.crm, missing)
            page = self._page(records, skip_unchanged=False)
            if page is not None:
                page.cursor = None
                yield page

    def _page(self, records: list[dict[str, Any]], skip_unchanged: bool) -> Page | None:
        modified = {str(r["Id"]): parse_datetime(r.get(self.modified)) for r in records}
        cursor = max((m for m in modified.values() if m), default=None)
        if skip_unchanged:
            unchanged = self._unchanged(modified)
            records = [r for r in records if str(r["Id"]) not in unchanged]
        if not records:
            return None
        page = Page(leads=[], cursor=cursor)
        for record in records:
            rid = str(record["Id"])
            props = {k: v for k, v in record.items() if k != "attributes"}
            self._add_record(page, rid, props)
        self._mark_read(page)
        return page

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
        for round_no in range(LOCK_RETRY_ROUNDS + 1):
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
                    for key, _ in chunk:
                        failed[key] = error_message(exc)
                    continue
                for (key, record), outcome in zip(chunk, results):
                    if outcome.get("success"):
                        saved[key] = str(outcome.get("id") or record.get("id"))
                        continue
                    errors = outcome.get("errors") or []
                    codes = [str(e.get("statusCode")) for e in errors]
                    if "UNABLE_TO_LOCK_ROW" in codes and round_no < LOCK_RETRY_ROUNDS:
                        locked.append((key, record))
                        continue
                    failed[key] = "; ".join(
                        f"{','.join(e.get('fields') or []) or '-'}: {e.get('statusCode')}: {e.get('message')}"
                        for e in errors
                    )[:500] or "failed without an error"
                for key, _ in chunk[len(results):]:
                    failed[key] = "no result returned for this record"
            if not locked:
                break
            self.retry.sleep(self.retry.base_wait * (2 ** round_no))
            todo = locked
        return saved, failed

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
        soql = format_soql(f"SELECT Id, {self.task_key} FROM {self.task_type} WHERE {self.task_key} IN {{}}", keys)
        found: dict[str, str] = {}
        for batch in SoqlPager(self).batches(soql):
            for record in batch:
                if record.get(self.task_key) in keys:
                    found[record[self.task_key]] = str(record["Id"])
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

    def _create_tasks(self, specs: list[TaskSpec]) -> tuple[dict[str, str], dict[str, str]]:
        return self._save("POST", [self._task_record(s) for s in specs], [s.key for s in specs])

    def _complete_tasks(self, task_ids: list[str]) -> tuple[list[str], dict[str, str]]:
        records = [{"attributes": {"type": self.task_type}, "id": i, "Status": "Completed"} for i in task_ids]
        saved, failed = self._save("PATCH", records, task_ids)
        return sorted(saved), failed

    # setup ----------------------------------------------------------------------------------------
    def describe(self, sobject: str) -> dict[str, Any]:
        name = _name(sobject)
        return self._sf_call("describe", lambda sf: getattr(sf, name).describe())


def _utc(moment: datetime, ceil: bool = False) -> datetime:
    """UTC; SOQL datetimes have whole seconds (format_soql drops the fraction), so an exclusive
    upper bound is rounded up to the next second rather than cut down."""
    moment = moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    moment = moment.astimezone(timezone.utc)
    if ceil and moment.microsecond:
        moment = moment.replace(microsecond=0) + timedelta(seconds=1)
    return moment
