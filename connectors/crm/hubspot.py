"""HubSpot connector on hubspot-api-client 12 (CRM v3 objects/search/batch, v4 associations).

Streams, one small class each:

- ``SearchPager``: contacts changed in ``[since, until)`` by ``lastmodifieddate`` (limit 200, one
  sort ASC, ``after`` offsets; up to five filter groups, each with the window's bounds). Before the
  10,000-result cap it restarts from the last seen timestamp ``t``: first ``t`` itself is
  enumerated by id (``lastmodifieddate EQ t AND hs_object_id GT last`` sorted by ``hs_object_id``,
  itself restarting at the cap with a higher ``last``), skipping ids already read at ``t``; then the
  search goes on with ``lastmodifieddate GTE t + 1``. So any number of records sharing one timestamp is read exactly once,
  never in a loop, at the cost of re-reading the few records at ``t`` once per 10,000.
- Write fences (``HubSpotConnector._read_groups``, state/fences.py): every contact batch update
  stamps the sync marker (``leadflow_synced_at``) with its own stamp and records the latest
  ``lastmodifieddate`` HubSpot answered (NULL until the answer). A window read is then up to five
  filter groups per search, each ANDed with the window: no marker; a marker older than the oldest
  live fence; newer than the newest (another writer); and per live fence ``marker EQ stamp AND
  lastmodifieddate GTE fence + 1`` (the whole window while the fence is NULL). Several searches are
  merged in modified order (``merged_pages``), so a page's cursor never passes an unread record.
  Without the marker property every record in the window is read, as before.
- ``ListPager``: full backfills (since=None) use the list endpoint (100 a page, no cap, no search
  rate limit, the ids of associated companies - and calls, meetings, deals - inline).
- ``CompanyResolver``: each page's primary companies via the v4 associations batch read and the
  companies batch read, 100 ids per call.
- ``ActivityReader`` (``signals: native``): each page's calls and meetings (and, with ``deals:``,
  deals) via the v4 associations batch read ``contacts -> calls|meetings|deals`` and the objects'
  batch reads, 100 ids per call, for the contacts whose gate property says there is something to
  read (``notes_last_contacted`` for activities, ``num_associated_deals`` for deals): a page of
  contacts nobody contacted costs no extra call; a list backfill has the associated ids inline,
  so it makes no association call either. Each matching call or meeting is an event at its
  own time; the most advanced deal is the lead's opportunity outcome.

Every call goes through ``CrmConnectorBase._call``: client-side limiter (190/10 s; search 5/s),
per-run budget, retries (connectors/retry.py), and counts by endpoint. The client's own urllib3
retries are switched off, so a call is retried in one place only (the retry policy). Responses are read raw
(``_preload_content=False``) and parsed as JSON: faster than the generated models, and the
rate-limit headers come along.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import urllib3
from hubspot import HubSpot
from pydantic import SecretStr
from sqlalchemy import Engine

from state import fences
from state import leads as state
from connectors.crm.base import LeadUpdate, Page, TaskSpec, WriteResult
from connectors.crm.common import CrmConnectorBase, KeyedTask, chunked
from connectors.crm.convert import activity_event, is_blank, parse_datetime
from connectors.ratelimit import ApiBudget, CallMeter, PrefectGlobalLimiter, SlidingWindowLimiter
from connectors.retry import Action, RetryPolicy, classify, error_message, is_request_error
from leadflow import settings
from leadflow.redaction import without_values
from mappings import ActivityMapping, CrmMapping, DealMapping, load_mapping
from state.outcomes import deal_outcome, record_outcomes

log = logging.getLogger("leadflow.connectors.crm.hubspot")

PRIMARY_CONTACT_TO_COMPANY = 1
ENGAGEMENT_OBJECTS = frozenset({"tasks", "calls", "meetings"})  # under crm.objects in hubspot-api-client
TASK_TO_CONTACT = 204
MARKER_RECHECK = timedelta(days=1)  # how long the marker property's existence is trusted without asking
PRIORITY = {"high": "HIGH", "normal": "MEDIUM", "low": "LOW"}


@dataclass
class HubSpotConfig:
    access_token: SecretStr
    host: str = "https://api.hubapi.com"
    timeout: float = 30.0
    burst_limit: int | None = 190  # None: no client-side burst limit (a stand-in that enforces none)
    burst_period: float = 10.0  # the portal's window; no headroom needed (connectors.ratelimit)
    search_per_second: int = 5
    max_calls: int | None = None
    daily_share: float | None = None
    fleet_rate_limit: str | None = None  # a Prefect global concurrency limit name (opt-in)
    page_size: int = settings.HUBSPOT_SEARCH_PAGE_SIZE
    result_cap: int = settings.HUBSPOT_SEARCH_RESULT_CAP
    batch_size: int = settings.HUBSPOT_BATCH_SIZE
    list_backfill: bool = True
    leads_per_page: int = 2000  # leads per pipeline page: reads of 100-200 are grouped so writes fill their batches
    company_cache_size: int = 20_000  # LRU: memory stays flat as data grows


def _ms(moment: datetime, ceil: bool = False) -> int:
    """Epoch ms; ``ceil`` rounds a sub-millisecond remainder up (an exclusive upper bound must
    not cut off a record stamped in the same millisecond)."""
    moment = moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    micros = int(moment.timestamp()) * 1_000_000 + moment.microsecond
    return -(-micros // 1000) if ceil else micros // 1000


def _record_ms(record: dict[str, Any], prop: str) -> int:
    raw = (record.get("properties") or {}).get(prop) or record.get("updatedAt")
    moment = parse_datetime(raw)
    return _ms(moment) if moment else 0


class HubSpotTransport:
    """The hubspot client plus the call gate; returns parsed JSON bodies."""

    def __init__(self, config: HubSpotConfig, gate: Callable[..., Any]):
        self.config = config
        self._gate = gate
        self._apis: dict[Any, Any] = {}
        self.client = HubSpot(
            access_token=config.access_token.get_secret_value(),
            host=config.host.rstrip("/"),
            retry=urllib3.Retry(total=0, connect=0, read=0, redirect=0, status=0, raise_on_status=False),
        )

    def __repr__(self) -> str:
        return f"HubSpotTransport(host={self.config.host!r})"

    def call(self, endpoint: str, method: Callable[..., Any], *args: Any, bucket: str = "default",
             idempotent: bool = True, **kwargs: Any) -> Any:
        def run() -> Any:
            response = method(*args, _preload_content=False, _request_timeout=self.config.timeout, **kwargs)
            try:
                self._observe(response.headers)
                raw = response.data
            finally:
                response.release_conn()  # back to the pool: keep-alive, not a connect per call
            return json.loads(raw) if raw else {}

        return self._gate(endpoint, run, bucket, idempotent=idempotent)

    _observe: Callable[[Any], None] = staticmethod(lambda headers: None)

    # endpoints ---------------------------------------------------------------------------------
    def _api(self, object_type: str, kind: str) -> Any:
        """The generated API object, built once: the client's discovery properties build a new
        ApiClient (and urllib3 pool) on every access, which would cost a connect per call."""
        key = (object_type, kind)
        if key not in self._apis:
            if object_type in ENGAGEMENT_OBJECTS:
                group = getattr(self.client.crm.objects, object_type)
            else:
                group = getattr(self.client.crm, object_type)
            self._apis[key] = getattr(group, kind)
        return self._apis[key]

    def search(self, object_type: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.call(f"{object_type}.search", self._api(object_type, "search_api").do_search, body, bucket="search")

    def batch_read(self, object_type: str, ids: list[str], properties: list[str]) -> dict[str, Any]:
        body = {"properties": properties, "inputs": [{"id": i} for i in ids]}
        return self.call(f"{object_type}.batch_read", self._api(object_type, "batch_api").read, body)

    def batch_update(self, object_type: str, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        return self.call(f"{object_type}.batch_update", self._api(object_type, "batch_api").update, {"inputs": inputs})

    def batch_create(self, object_type: str, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        return self.call(f"{object_type}.batch_create", self._api(object_type, "batch_api").create, {"inputs": inputs},
                         idempotent=False)

    def batch_read_by(self, object_type: str, id_property: str, values: list[str],
                      properties: list[str]) -> dict[str, Any]:
        """Batch read by the values of a unique property (a direct read: no search-index lag)."""
        body = {"properties": properties, "idProperty": id_property, "inputs": [{"id": v} for v in values]}
        return self.call(f"{object_type}.batch_read", self._api(object_type, "batch_api").read, body)

    def batch_upsert(self, object_type: str, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        """Create or update by a unique property: idempotent, so the gate retries it."""
        return self.call(f"{object_type}.batch_upsert", self._api(object_type, "batch_api").upsert, {"inputs": inputs})

    def associate(self, from_type: str, to_type: str, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        """v4 batch association create: linking a linked pair again changes nothing, so it is retried."""
        if "associations" not in self._apis:
            self._apis["associations"] = self.client.crm.associations.v4.batch_api
        return self.call("associations.batch_create", self._apis["associations"].create, from_type, to_type,
                         {"inputs": inputs})

    def list_page(self, object_type: str, properties: list[str], after: str | None,
                  associations: list[str] | None = None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"limit": 100, "properties": properties}
        if after:
            kwargs["after"] = after
        if associations:
            kwargs["associations"] = associations
        return self.call(f"{object_type}.list", self._api(object_type, "basic_api").get_page, **kwargs)

    def associations(self, from_type: str, to_type: str, ids: list[str],
                     endpoint: str = "associations.batch_read") -> dict[str, Any]:
        if "associations" not in self._apis:
            self._apis["associations"] = self.client.crm.associations.v4.batch_api
        body = {"inputs": [{"id": i} for i in ids]}
        return self.call(endpoint, self._apis["associations"].get_page, from_type, to_type, body)

    @property
    def properties_api(self) -> Any:
        if "properties" not in self._apis:
            self._apis["properties"] = self.client.crm.properties
        return self._apis["properties"]


# ------------------------------------------------------------------------------------------ reads


MAX_FILTER_GROUPS = 5  # per search; HubSpot's current docs also allow at most 6 filters a group, 18 in all


@dataclass(frozen=True)
class SearchGroup:
    """One filter group of a window read: ``filters`` on other properties, ANDed with the window
    ``[since, until)`` on the modified property, starting no earlier than ``low_ms`` (epoch ms)."""

    filters: tuple[dict[str, Any], ...] = ()
    low_ms: int = 0


ALL_RECORDS = (SearchGroup(),)


class SearchPager:
    """Raw search pages in modified order, each record once; see the module docstring. ``groups``:
    up to five filter groups (ORed, each with the window's bounds), one search stream."""

    def __init__(self, transport: HubSpotTransport, object_type: str, modified_prop: str, properties: list[str],
                 page_size: int, cap: int, groups: tuple[SearchGroup, ...] = ALL_RECORDS):
        if not 0 < len(groups) <= MAX_FILTER_GROUPS:
            raise ValueError(f"a search takes 1 to {MAX_FILTER_GROUPS} filter groups, not {len(groups)}")
        self.transport, self.object_type, self.modified_prop = transport, object_type, modified_prop
        self.properties, self.page_size, self.cap = properties, page_size, cap
        self.groups = groups

    def _search(self, filter_groups: list[list[dict[str, Any]]], sort: str, after: int) -> dict[str, Any]:
        body: dict[str, Any] = {
            "filterGroups": [{"filters": filters} for filters in filter_groups],
            "sorts": [{"propertyName": sort, "direction": "ASCENDING"}],
            "properties": self.properties,
            "limit": self.page_size,
        }
        if after:
            body["after"] = str(after)
        return self.transport.search(self.object_type, body)

    def _window_groups(self, lower_ms: int, until_ms: int | None) -> list[list[dict[str, Any]]]:
        """Each group's filters with the window from ``lower_ms`` (or the group's own later start);
        a group whose start is past ``until`` is left out."""
        out = []
        for group in self.groups:
            low = max(lower_ms, group.low_ms)
            if until_ms is not None and low >= until_ms:
                continue
            filters = list(group.filters) + [{"propertyName": self.modified_prop, "operator": "GTE", "value": str(low)}]
            if until_ms is not None:
                filters.append({"propertyName": self.modified_prop, "operator": "LT", "value": str(until_ms)})
            out.append(filters)
        return out

    def pages(self, since: datetime | None, until: datetime | None) -> Iterator[list[dict[str, Any]]]:
        until_ms = _ms(until, ceil=True) if until else None
        lower_ms = _ms(since) if since else 0
        boundary_ts: int | None = None
        boundary_ids: set[str] = set()
        while True:
            filter_groups = self._window_groups(lower_ms, until_ms)
            if not filter_groups:
                return
            after, exhausted = 0, False
            while True:
                data = self._search(filter_groups, self.modified_prop, after)
                fresh = []
                for record in data.get("results") or []:
                    ts = _record_ms(record, self.modified_prop)
                    if ts != boundary_ts:
                        boundary_ts, boundary_ids = ts, set()
                    if record["id"] in boundary_ids:
                        continue
                    boundary_ids.add(record["id"])
                    fresh.append(record)
                if fresh:
                    yield fresh
                nxt = ((data.get("paging") or {}).get("next") or {}).get("after")
                if not nxt:
                    exhausted = True
                    break
                after = int(nxt)
                if after >= self.cap:
                    break
            if exhausted:
                return
            # at the cap: finish the last timestamp by id (ties may exceed any window), then go
            # strictly past it - no record at that timestamp is dropped, none is read twice
            yield from self._by_id(boundary_ts, boundary_ids)
            lower_ms = boundary_ts + 1
            boundary_ts, boundary_ids = None, set()

    def _by_id(self, ts: int, seen: set[str]) -> Iterator[list[dict[str, Any]]]:
        groups = [g for g in self.groups if g.low_ms <= ts]
        last_id = 0
        while True:
            filter_groups = [list(g.filters) + [
                {"propertyName": self.modified_prop, "operator": "EQ", "value": str(ts)},
                {"propertyName": "hs_object_id", "operator": "GT", "value": str(last_id)},
            ] for g in groups]
            after = 0
            while True:
                data = self._search(filter_groups, "hs_object_id", after)
                results = data.get("results") or []
                fresh = [r for r in results if r["id"] not in seen]
                seen.update(r["id"] for r in fresh)
                if results:
                    last_id = max(last_id, max(int(r["id"]) for r in results))
                if fresh:
                    yield fresh
                nxt = ((data.get("paging") or {}).get("next") or {}).get("after")
                if not nxt:
                    return
                after = int(nxt)
                if after >= self.cap:
                    break


def merged_pages(streams: list[Iterator[list[dict[str, Any]]]], modified_prop: str,
                 size: int) -> Iterator[list[dict[str, Any]]]:
    """Several search streams (each in modified order, disjoint) as one stream in modified order,
    in lists of ``size``: a page's cursor never passes a record another stream has still to return."""
    if len(streams) == 1:
        yield from streams[0]
        return
    records = heapq.merge(*(itertools.chain.from_iterable(s) for s in streams),
                          key=lambda r: _record_ms(r, modified_prop))
    while chunk := list(itertools.islice(records, size)):
        yield chunk


class ListPager:
    """The list endpoint (full backfill): 100 a page, id order, company ids inline."""

    def __init__(self, transport: HubSpotTransport, object_type: str, properties: list[str],
                 associations: list[str] | None = None):
        self.transport, self.object_type, self.properties = transport, object_type, properties
        self.associations = associations or ["companies"]

    def pages(self) -> Iterator[list[dict[str, Any]]]:
        after: str | None = None
        while True:
            data = self.transport.list_page(self.object_type, self.properties, after, associations=self.associations)
            if data.get("results"):
                yield data["results"]
            after = ((data.get("paging") or {}).get("next") or {}).get("after")
            if not after:
                return


class CompanyResolver:
    """contact id -> (primary company id, company properties), batched 100 per call."""

    def __init__(self, transport: HubSpotTransport, lead_type: str, company_type: str, properties: list[str],
                 batch: int, cache_size: int = 20_000):
        self.transport, self.lead_type, self.company_type = transport, lead_type, company_type
        self.properties, self.batch = properties, batch
        self.cache_size = cache_size
        self._cache: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def company_ids(self, contact_ids: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for chunk in chunked(contact_ids, self.batch):
            data = self.transport.associations(self.lead_type, self.company_type, chunk)
            for row in data.get("results") or []:
                links = row.get("to") or []
                if not links:
                    continue
                primary = [l for l in links if any(
                    (t.get("typeId") == PRIMARY_CONTACT_TO_COMPANY) for t in l.get("associationTypes") or [])]
                chosen = (primary or sorted(links, key=lambda l: int(l["toObjectId"])))[0]
                out[str(row["from"]["id"])] = str(chosen["toObjectId"])
        return out

    def companies(self, company_ids: set[str]) -> dict[str, dict[str, Any]]:
        """Each company is read once per run (contacts of one company span many pages); the cache
        follows leadflow's own company writes (``remember_written``)."""
        out: dict[str, dict[str, Any]] = {}
        if not self.properties:
            return out
        with self._lock:
            for company_id in company_ids:
                if company_id in self._cache:
                    self._cache.move_to_end(company_id)
                    out[company_id] = dict(self._cache[company_id])
        missing = sorted(set(company_ids) - set(out))
        for chunk in chunked(missing, self.batch):
            data = self.transport.batch_read(self.company_type, chunk, self.properties)
            for record in data.get("results") or []:
                out[str(record["id"])] = record.get("properties") or {}
                self._remember(str(record["id"]), dict(out[str(record["id"])]))
        return out

    def forget(self) -> None:
        """A new run reads companies afresh: people edit them between runs."""
        with self._lock:
            self._cache.clear()

    def remember_written(self, company_id: str, fields: dict[str, Any]) -> None:
        with self._lock:
            if company_id in self._cache:
                self._cache[company_id].update(fields)

    def _remember(self, company_id: str, properties: dict[str, Any]) -> None:
        with self._lock:
            self._cache[company_id] = properties
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)


def _gate_open(props: dict[str, Any], gate_field: str | None) -> bool:
    """Whether a contact may have records to read: no gate, or the gate property set and not zero."""
    if gate_field is None:
        return True
    value = props.get(gate_field)
    return not is_blank(value) and str(value).strip() not in ("0", "0.0", "false")


class ActivityReader:
    """contact id -> {"events": [...], "outcome": {...}} from associated calls, meetings and deals."""

    def __init__(self, transport: HubSpotTransport, lead_type: str, activities: list[ActivityMapping],
                 deals: DealMapping | None, batch: int):
        self.transport, self.lead_type, self.batch = transport, lead_type, batch
        self.activities, self.deals = activities, deals

    @property
    def object_types(self) -> list[str]:
        """The object types read, for the list endpoint's inline ``associations``."""
        names = list(dict.fromkeys(a.object for a in self.activities))
        return names + ([self.deals.object] if self.deals is not None else [])

    def read(self, records: list[dict[str, Any]], now: datetime | None = None,
             inline: dict[str, dict[str, list[str]]] | None = None) -> dict[str, dict[str, Any]]:
        """``inline``: object type -> contact id -> associated ids, as the list endpoint returned
        them (no association call then)."""
        now = now or datetime.now(timezone.utc)
        inline = inline or {}
        out: dict[str, dict[str, Any]] = {}
        by_object: dict[str, list[ActivityMapping]] = {}
        for activity in self.activities:
            by_object.setdefault(activity.object, []).append(activity)
        for object_type, activities in by_object.items():
            gates = {a.gate_field for a in activities}
            ids = [str(r["id"]) for r in records
                   if any(_gate_open(r.get("properties") or {}, g) for g in gates)]
            props = sorted({a.time_field for a in activities} | {f for a in activities for f in a.where})
            for contact_id, rows in self._linked_records(object_type, ids, props, inline.get(object_type)).items():
                events = out.setdefault(contact_id, {}).setdefault("events", [])
                for row_id, row in rows:
                    for activity in activities:
                        event = activity_event("hubspot", activity, row_id, row, now)
                        if event is not None:
                            events.append(event)
        if self.deals is not None:
            ids = [str(r["id"]) for r in records if _gate_open(r.get("properties") or {}, self.deals.gate_field)]
            rows_by_contact = self._linked_records(self.deals.object, ids, self.deals.properties(),
                                                   inline.get(self.deals.object))
            for contact_id, rows in rows_by_contact.items():
                outcome = deal_outcome(self.deals, rows)
                if outcome:
                    out.setdefault(contact_id, {})["outcome"] = outcome
        return out

    def _linked_records(self, object_type: str, contact_ids: list[str], properties: list[str],
                        inline: dict[str, list[str]] | None = None) -> dict[str, list[tuple[str, dict[str, Any]]]]:
        """contact id -> [(record id, properties)] of the associated ``object_type`` records
        (``inline``: the associations the list endpoint returned, instead of association calls)."""
        links: dict[str, list[str]] = {}
        if inline is not None:
            links = {c: inline[c] for c in contact_ids if inline.get(c)}
            contact_ids = []
        for chunk in chunked(contact_ids, self.batch):
            data = self.transport.associations(self.lead_type, object_type, chunk, endpoint=f"associations.{object_type}.batch_read")
            for row in data.get("results") or []:
                links[str(row["from"]["id"])] = [str(link["toObjectId"]) for link in row.get("to") or []]
        wanted = sorted({i for ids in links.values() for i in ids}, key=int)
        found: dict[str, dict[str, Any]] = {}
        for chunk in chunked(wanted, self.batch):
            data = self.transport.batch_read(object_type, chunk, properties)
            for record in data.get("results") or []:
                found[str(record["id"])] = record.get("properties") or {}
        return {contact: [(i, found[i]) for i in ids if i in found] for contact, ids in links.items()}


# ------------------------------------------------------------------------------------------ connector


def _inline_links(records: list[dict[str, Any]], object_types: list[str]) -> dict[str, dict[str, list[str]]]:
    """object type -> contact id -> ids of the associated records the list endpoint returned inline."""
    out: dict[str, dict[str, list[str]]] = {t: {} for t in object_types}
    for record in records:
        associations = record.get("associations") or {}
        for object_type in object_types:
            rows = (associations.get(object_type) or {}).get("results") or []
            if rows:
                out[object_type][str(record["id"])] = list(dict.fromkeys(str(row["id"]) for row in rows))
    return out


def _grouped(pages: Iterator[list[dict[str, Any]]], size: int) -> Iterator[list[dict[str, Any]]]:
    """Consecutive API pages joined into lists of at least ``size`` records (the last may be smaller)."""
    group: list[dict[str, Any]] = []
    for records in pages:
        group.extend(records)
        if len(group) >= size:
            yield group
            group = []
    if group:
        yield group


class HubSpotConnector(CrmConnectorBase):
    crm = "hubspot"
    task_lookup_batch = 100  # an IN filter takes 100 values

    def __init__(self, config: HubSpotConfig, engine: Engine, mapping: CrmMapping | None = None,
                 retry: RetryPolicy | None = None, meter: CallMeter | None = None, mark_reads: bool = True):
        mapping = mapping or load_mapping("hubspot")
        meter = meter or CallMeter(
            limiters={
                **({"default": SlidingWindowLimiter(config.burst_limit, config.burst_period)}
                   if config.burst_limit else {}),
                "search": SlidingWindowLimiter(config.search_per_second, 1.0),
            },
            budget=ApiBudget(max_calls=config.max_calls, daily_share=config.daily_share),
            fleet=PrefectGlobalLimiter(config.fleet_rate_limit) if config.fleet_rate_limit else None,
        )
        super().__init__(engine, mapping, meter, retry or RetryPolicy(), mark_reads)
        self.config = config
        self.transport = HubSpotTransport(config, self._call)
        self.transport._observe = meter.observe_hubspot_headers
        self.lead_type = mapping.objects["lead"]
        self.company_type = mapping.objects["company"]
        self.task_type = mapping.objects["task"]
        self.lead_props = mapping.crm_fields("lead")
        self.company_props = mapping.crm_fields("company")
        self.resolver = CompanyResolver(self.transport, self.lead_type, self.company_type, self.company_props,
                                        config.batch_size, config.company_cache_size)
        self.activity_reader = ActivityReader(self.transport, self.lead_type, mapping.activities(), mapping.deals,
                                              config.batch_size)
        self._marker: str | None = None  # the sync marker's name, "" without one; None: not asked yet

    def __repr__(self) -> str:
        return f"HubSpotConnector(host={self.config.host!r})"

    # reads ------------------------------------------------------------------------------------
    def iter_pages(self, since: datetime | None, until: datetime | None) -> Iterator[Page]:
        self.resolver.forget()
        if since is None and self.config.list_backfill:
            yield from self._list_backfill(until)
            return
        prop = self.mapping.modified_field
        groups = self._read_groups(since)
        streams = [SearchPager(self.transport, self.lead_type, prop, self.lead_props, self.config.page_size,
                               self.config.result_cap, groups[i:i + MAX_FILTER_GROUPS]).pages(since, until)
                   for i in range(0, len(groups), MAX_FILTER_GROUPS)]
        for records in _grouped(merged_pages(streams, prop, self.config.page_size), self.config.leads_per_page):
            page = self._page(records, skip_unchanged=True)
            if page is not None:
                yield page

    def _read_groups(self, since: datetime | None) -> tuple[SearchGroup, ...]:
        """The filter groups of a window read from ``since``: every record in the window, less the
        ones only leadflow wrote since (write fences, state/fences.py). With the marker property
        and live fences: records without a marker; markers older than the oldest live fence (or
        newer than the newest: another writer); and per fence, its batch's records modified after
        the CRM's answer (all of them in the window when the answer never came). Fences stamped
        before ``since`` expire: their records fall in the second group."""
        marker = self.sync_marker()
        if marker is None or since is None:
            return ALL_RECORDS
        since_ms = _ms(since)
        fences.expire_fences(self.engine, self.crm, self.lead_type, since_ms)
        live = fences.live_fences(self.engine, self.crm, self.lead_type, since_ms)
        if not live:
            return ALL_RECORDS
        groups = [SearchGroup(({"propertyName": marker, "operator": "NOT_HAS_PROPERTY"},)),
                  SearchGroup(({"propertyName": marker, "operator": "LT", "value": str(live[0].stamp)},)),
                  SearchGroup(({"propertyName": marker, "operator": "GT", "value": str(live[-1].stamp)},))]
        for fence in live:
            low = 0 if fence.fence_ms is None else fence.fence_ms + 1
            groups.append(SearchGroup(({"propertyName": marker, "operator": "EQ", "value": str(fence.stamp)},), low))
        return tuple(groups)

    def sync_marker(self) -> str | None:
        """The marker property's name when the portal has it (asked once a day; confirmed in
        ``lf_crm_properties``), else None: leadflow's writes are then re-read as echoes, as before."""
        if self._marker is not None:
            return self._marker or None
        name = self.mapping.sync_marker_field
        if not name:
            self._marker = ""
            return None
        if not fences.property_confirmed(self.engine, self.crm, self.lead_type, name, MARKER_RECHECK):
            try:
                self.transport.call("properties.get", self.transport.properties_api.core_api.get_by_name,
                                    self.lead_type, name)
            except Exception as exc:  # noqa: BLE001
                if getattr(exc, "status", None) != 404:
                    raise
                log.warning("hubspot: the portal has no %s property %s (run `leadflow crm setup`): leadflow's own "
                            "writes are re-read as echoes until it exists", self.lead_type, name)
                self._marker = ""
                return None
            fences.confirm_property(self.engine, self.crm, self.lead_type, name)
        self._marker = name
        return name

    def _list_backfill(self, until: datetime | None) -> Iterator[Page]:
        pager = ListPager(self.transport, self.lead_type, self.lead_props,
                          [self.company_type] + self.activity_reader.object_types)
        limit = _ms(until, ceil=True) if until else None
        for records in _grouped(pager.pages(), self.config.leads_per_page):
            if limit is not None:
                records = [r for r in records if _record_ms(r, self.mapping.modified_field) < limit]
            inline = {}
            for r in records:
                links = (((r.get("associations") or {}).get(self.company_type) or {}).get("results")) or []
                primary = [l for l in links if "unlabeled" not in str(l.get("type", ""))] or links
                if primary:
                    inline[str(r["id"])] = str(primary[0]["id"])
            page = self._page(records, skip_unchanged=False, company_ids=inline,
                              native_links=_inline_links(records, self.activity_reader.object_types))
            if page is not None:
                page.cursor = None  # id order: no watermark candidate until the end
                yield page

    def fetch_by_ids(self, ids: list[str]) -> Iterator[Page]:
        """Leads by id (pending retries), 100 per batch read; ids that no longer exist leave
        ``lf_pending_leads``."""
        for chunk in chunked([str(i) for i in ids], self.config.page_size):
            records: list[dict[str, Any]] = []
            missing: list[str] = []
            for sub in chunked(chunk, self.config.batch_size):
                data = self.transport.batch_read(self.lead_type, sub, self.lead_props)
                records.extend(data.get("results") or [])
                for err in data.get("errors") or []:
                    if err.get("category") == "OBJECT_NOT_FOUND":
                        missing.extend((err.get("context") or {}).get("ids") or [])
            if missing:
                log.info("hubspot: %d pending lead(s) no longer exist; dropped", len(missing))
                state.clear_pending(self.engine, self.crm, missing)
            records.sort(key=lambda r: (_record_ms(r, self.mapping.modified_field), int(r["id"])))
            page = self._page(records, skip_unchanged=False)
            if page is not None:
                page.cursor = None  # out of window: never a watermark candidate
                yield page

    def _page(self, records: list[dict[str, Any]], skip_unchanged: bool, company_ids: dict[str, str] | None = None,
              native_links: dict[str, dict[str, list[str]]] | None = None) -> Page | None:
        if skip_unchanged and records:
            modified = {str(r["id"]): parse_datetime(r["properties"].get(self.mapping.modified_field) or r.get("updatedAt"))
                        for r in records}
            cursor = max((m for m in modified.values() if m), default=None)
            unchanged = self._unchanged(modified)
            records = [r for r in records if str(r["id"]) not in unchanged]
        else:
            cursor = max((parse_datetime(r["properties"].get(self.mapping.modified_field)) for r in records
                          if r["properties"].get(self.mapping.modified_field)), default=None)
        if not records:
            return None
        ids = [str(r["id"]) for r in records]
        if company_ids is None:
            company_ids = self.resolver.company_ids(ids) if self.company_props else {}
        companies = self.resolver.companies(set(company_ids.values())) if company_ids else {}
        native = self.activity_reader.read(records, inline=native_links)
        page = Page(leads=[], cursor=cursor)
        for record in records:
            rid = str(record["id"])
            props = record.get("properties") or {}
            company_id = company_ids.get(rid)
            company = companies.get(company_id) if company_id else None
            self._add_record(page, rid, props, company, company_id, native.get(rid))
        self._mark_read(page)
        if self.mark_reads:
            record_outcomes(self.engine, self.crm, page.leads)
        return page

    # writes -----------------------------------------------------------------------------------
    def read_current(self, obj: str, object_ids: list[str], fields: list[str]) -> dict[str, dict[str, Any]]:
        """Contacts' or companies' ``fields`` as HubSpot holds them now, 100 ids per batch read."""
        object_type = self.lead_type if obj == "lead" else self.company_type
        out: dict[str, dict[str, Any]] = {}
        for chunk in chunked([str(i) for i in object_ids], self.config.batch_size):
            data = self.transport.batch_read(object_type, chunk, fields)
            for record in data.get("results") or []:
                out[str(record["id"])] = record.get("properties") or {}
        return out

    def write_updates(self, updates: list[LeadUpdate]) -> WriteResult:
        result = WriteResult()
        echo: dict[str, datetime] = {}
        # contact id -> the marker stamp its batch carried: this call's own, as the two pages in flight
        # write through one connector
        stamped: dict[str, str] = {}
        cleared, failed = self._clear_first(updates)
        for obj, object_type in (("lead", self.lead_type), ("company", self.company_type)):
            merged: dict[str, dict[str, Any]] = {}
            owners: dict[str, list[str]] = {}
            for upd in updates:
                if upd.object != obj or not upd.fields or upd.crm_id in failed:
                    continue
                merged.setdefault(upd.object_id, {}).update(upd.fields)
                owners.setdefault(upd.object_id, []).append(upd.crm_id)
            inputs = [{"id": oid, "properties": props} for oid, props in merged.items()]
            for chunk in chunked(inputs, self.config.batch_size):
                ok, bad = self._update_batch(object_type, chunk, stamped)
                for oid, reason in bad.items():
                    fields = ", ".join(sorted(merged.get(oid, {})))
                    after = f" (after clearing {', '.join(cleared[oid])})" if oid in cleared and obj == "lead" else ""
                    for crm_id in owners.get(oid, []):
                        failed.setdefault(crm_id, f"hubspot:{crm_id}: {object_type} {oid}: {fields}{after}: {reason}")
                if obj == "lead":
                    echo.update(ok)
                else:
                    for company_id in ok:
                        self.resolver.remember_written(company_id, merged[company_id])
        result.failed = failed
        result.succeeded = sorted({u.crm_id for u in updates} - set(failed))
        if self._marker:
            result.markers = {u.crm_id: (self._marker, stamped[u.object_id]) for u in updates
                              if u.object == "lead" and u.crm_id not in failed and u.object_id in stamped}
        good_echo = {k: v for k, v in echo.items() if k not in failed}
        if good_echo:
            state.mark_seen(self.engine, self.crm, good_echo, kind="echo")
        return result

    def _kept_later_stage(self, echoed: dict[str, Any], sent: dict[str, Any]) -> str | None:
        """HubSpot answers a set to an earlier lifecycle stage with success and keeps the later one:
        a set the answer does not echo failed (the portal's stage order is not the mapping's)."""
        native = self.mapping.native_stages
        write = native.write
        if not native.enabled or write is None or not write.forward_only or sent.get(write.field) in (None, ""):
            return None
        if write.field not in echoed or echoed[write.field] == sent[write.field]:
            return None
        return (f"HubSpot kept {write.field} at another stage than the one sent (answered success): "
                "the portal's lifecycle stage order differs from native_stages.write.order")

    def _clear_first(self, updates: list[LeadUpdate]) -> tuple[dict[str, list[str]], dict[str, str]]:
        """The clears some updates need before their set (a lifecycle stage moving back), sent as
        batches of their own ahead of the sets: HubSpot ignores a set to an earlier lifecycle stage
        and applies a batch's inputs in no promised order. A lead whose clear failed is not set
        (it stays pending; the next run sees the stage it has). Returns (contact id -> cleared
        fields, crm_id -> failure)."""
        wanted = {u.object_id: u for u in updates if u.clear_first and u.object == "lead"}
        inputs = [{"id": oid, "properties": {name: "" for name in u.clear_first}} for oid, u in wanted.items()]
        cleared: dict[str, list[str]] = {}
        failed: dict[str, str] = {}
        for chunk in chunked(inputs, self.config.batch_size):
            _ok, bad = self._update_batch(self.lead_type, chunk)
            for item in chunk:
                upd = wanted[item["id"]]
                if item["id"] in bad:
                    failed[upd.crm_id] = (f"hubspot:{upd.crm_id}: {self.lead_type} {item['id']}: clearing "
                                          f"{', '.join(upd.clear_first)} before an earlier stage: {bad[item['id']]}")
                else:
                    cleared[item["id"]] = list(upd.clear_first)
        return cleared, failed

    def _update_batch(self, object_type: str, inputs: list[dict[str, Any]], stamped: dict[str, str] | None = None,
                      ) -> tuple[dict[str, datetime], dict[str, str]]:
        """Send one batch; per-record errors are returned, a whole-batch rejection is bisected so
        the valid records still land. Returns (id -> modification time after the write, failures);
        ``stamped`` gets the marker stamp of each record that landed with one.

        A contact batch carries the sync marker with its own write fence (state/fences.py): opened
        before the call, closed with the latest modification time the answer shows; left open when
        no answer came (the batch may have landed: the next read takes all its records), dropped when
        HubSpot refused the whole batch (nothing landed)."""
        marker = self.sync_marker() if object_type == self.lead_type else None
        stamp = fences.open_fence(self.engine, self.crm, self.lead_type, _ms(datetime.now(timezone.utc))) \
            if marker else None
        sent = [{**i, "properties": {**i["properties"], marker: str(stamp)}} for i in inputs] if marker else inputs
        try:
            data = self.transport.batch_update(object_type, sent)
        except Exception as exc:  # noqa: BLE001
            decision = classify(exc)
            if decision.action is Action.RETRY:  # retries exhausted: pending, retried next run; the fence stays open
                return {}, {i["id"]: f"not written: {decision.reason}" for i in inputs}
            if not is_request_error(exc):
                raise  # quota, auth, permissions: no record can land
            if stamp is not None:
                fences.drop_fence(self.engine, self.crm, self.lead_type, stamp)
                if marker in error_message(exc):  # the property went away since it was confirmed
                    self._lose_marker(marker)
                    return self._update_batch(object_type, inputs, stamped)
            if len(inputs) == 1:
                return {}, {inputs[0]["id"]: without_values(error_message(exc), inputs[0]["properties"])}
            mid = len(inputs) // 2
            ok1, bad1 = self._update_batch(object_type, inputs[:mid], stamped)
            ok2, bad2 = self._update_batch(object_type, inputs[mid:], stamped)
            return {**ok1, **ok2}, {**bad1, **bad2}
        if stamp is not None:
            self._close_fence(stamp, data)
        ok, bad = self._batch_outcome(object_type, inputs, data)
        if stamp is not None and stamped is not None:
            stamped.update({oid: str(stamp) for oid in ok})
        return ok, bad

    def _close_fence(self, stamp: int, data: dict[str, Any]) -> None:
        """The fence at the latest modification time of the batch's results (none: nothing landed)."""
        landed = [_record_ms(r, self.mapping.modified_field) for r in data.get("results") or []]
        if landed:
            fences.close_fence(self.engine, self.crm, self.lead_type, stamp, max(landed))
        else:
            fences.drop_fence(self.engine, self.crm, self.lead_type, stamp)

    def _lose_marker(self, marker: str) -> None:
        log.warning("hubspot: the %s property %s no longer exists (run `leadflow crm setup`): leadflow's own "
                    "writes are re-read as echoes until it exists", self.lead_type, marker)
        fences.forget_property(self.engine, self.crm, self.lead_type, marker)
        self._marker = ""

    def _batch_outcome(self, object_type: str, inputs: list[dict[str, Any]],
                       data: dict[str, Any]) -> tuple[dict[str, datetime], dict[str, str]]:
        """(id -> modification time after the write, id -> failure) from a batch update's answer."""
        ok: dict[str, datetime | None] = {}
        bad: dict[str, str] = {}
        sent = {str(i["id"]): i["properties"] for i in inputs}
        for record in data.get("results") or []:
            props = record.get("properties") or {}
            kept = self._kept_later_stage(props, sent.get(str(record["id"]), {})) if object_type == self.lead_type else None
            if kept:
                bad[str(record["id"])] = kept
                continue
            ok[str(record["id"])] = parse_datetime(props.get(self.mapping.modified_field) or record.get("updatedAt"))
        for err in data.get("errors") or []:
            ids = (err.get("context") or {}).get("ids") or []
            message = f"{err.get('category') or err.get('status')}: {err.get('message')}"
            for oid in ids:
                bad[str(oid)] = without_values(message, sent.get(str(oid), {}))[:500]
        listed = {i["id"] for i in inputs}
        for oid in listed - set(ok) - set(bad):
            bad[oid] = "no result returned for this record"
        return {k: v for k, v in ok.items() if v is not None}, bad

    # tasks --------------------------------------------------------------------------------------
    def _find_tasks(self, keys: list[str]) -> dict[str, str]:
        """Batch read by the unique task key property (``idProperty``); unknown keys come back as
        OBJECT_NOT_FOUND errors of a 207, not as results."""
        key_prop = self.mapping.tasks.key_field
        wanted = {k.lower(): k for k in keys}
        data = self.transport.batch_read_by(self.task_type, key_prop, keys, [key_prop])
        found: dict[str, str] = {}
        for record in data.get("results") or []:
            value = (record.get("properties") or {}).get(key_prop)
            if value and value.lower() in wanted:
                found[wanted[value.lower()]] = str(record["id"])
        return found

    def _task_input(self, spec: TaskSpec) -> dict[str, Any]:
        """One upsert input: ``id`` is the key, ``idProperty`` the unique key property. Upsert
        inputs take no associations: ``_link_tasks`` adds them."""
        due = datetime(spec.due.year, spec.due.month, spec.due.day, tzinfo=timezone.utc)
        key_prop = self.mapping.tasks.key_field
        return {
            "id": spec.key,
            "idProperty": key_prop,
            "objectWriteTraceId": spec.key,
            "properties": {
                "hs_task_subject": spec.subject[:255],
                "hs_task_body": spec.body,
                "hs_timestamp": due.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                "hs_task_priority": PRIORITY.get(spec.priority, "MEDIUM"),
                "hs_task_status": "NOT_STARTED",
                key_prop: spec.key,
            },
        }

    def _upsert_tasks(self, specs: list[TaskSpec]) -> tuple[dict[str, str], set[str], dict[str, str]]:
        """One batch upsert; a rejected batch (400) is bisected so the valid tasks still land, unless
        the key property itself is refused (not unique: every task would fail alike)."""
        try:
            data = self.transport.batch_upsert(self.task_type, [self._task_input(s) for s in specs])
        except Exception as exc:  # noqa: BLE001
            if not is_request_error(exc):
                raise
            if len(specs) == 1 or "non-unique" in error_message(exc):
                return {}, set(), {spec.key: error_message(exc) for spec in specs}
            mid = len(specs) // 2
            first, second = self._upsert_tasks(specs[:mid]), self._upsert_tasks(specs[mid:])
            return {**first[0], **second[0]}, first[1] | second[1], {**first[2], **second[2]}
        key_prop = self.mapping.tasks.key_field
        upserted: dict[str, str] = {}
        new: set[str] = set()
        for record in data.get("results") or []:
            key = record.get("objectWriteTraceId") or (record.get("properties") or {}).get(key_prop)
            if key:
                upserted[str(key)] = str(record["id"])
                if record.get("new"):
                    new.add(str(key))
        failed: dict[str, str] = {}
        for err in data.get("errors") or []:
            context = err.get("context") or {}
            for key in context.get("objectWriteTraceId") or context.get("ids") or []:
                failed[str(key)] = f"{err.get('category')}: {err.get('message')}"[:500]
        for spec in specs:
            if spec.key not in upserted and spec.key not in failed:
                failed[spec.key] = "no result returned for this task"
        return upserted, new, failed

    def _link_tasks(self, links: dict[str, tuple[str, str]]) -> dict[str, str]:
        """Each task to its contact (task_to_contact), by the v4 batch association create."""
        failed: dict[str, str] = {}
        key_of = {task_id: key for key, (task_id, _lead) in links.items()}
        inputs = [{"from": {"id": task_id}, "to": {"id": lead_id},
                   "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": TASK_TO_CONTACT}]}
                  for task_id, lead_id in links.values()]
        for chunk in chunked(inputs, self.config.batch_size):
            try:
                data = self.transport.associate(self.task_type, self.lead_type, chunk)
            except Exception as exc:  # noqa: BLE001
                decision = classify(exc)
                if decision.action is not Action.RETRY and not is_request_error(exc):
                    raise
                failed.update({key_of[i["from"]["id"]]: f"not linked to its contact: {error_message(exc)}" for i in chunk})
                continue
            for err in data.get("errors") or []:
                for task_id in (err.get("context") or {}).get("fromObjectId") or []:
                    if str(task_id) in key_of:
                        failed[key_of[str(task_id)]] = f"not linked to its contact: {err.get('category')}: " \
                                                       f"{err.get('message')}"[:500]
        return failed

    def _complete_tasks(self, task_ids: list[str]) -> tuple[list[str], dict[str, str]]:
        closed: list[str] = []
        failed: dict[str, str] = {}
        for chunk in chunked(task_ids, self.config.batch_size):
            ok, bad = self._update_batch(self.task_type, [{"id": i, "properties": {"hs_task_status": "COMPLETED"}} for i in chunk])
            closed.extend(i for i in chunk if i not in bad)
            failed.update(bad)
        return closed, failed

    def _keyed_tasks(self) -> Iterator[KeyedTask]:
        """Tasks with a key, by search (``HAS_PROPERTY``) in id order; each page starts after the
        last id seen, so the 10,000-result cap is never reached."""
        key_prop = self.mapping.tasks.key_field
        last_id = 0
        while True:
            body = {"filterGroups": [{"filters": [
                        {"propertyName": key_prop, "operator": "HAS_PROPERTY"},
                        {"propertyName": "hs_object_id", "operator": "GT", "value": str(last_id)}]}],
                    "sorts": [{"propertyName": "hs_object_id", "direction": "ASCENDING"}],
                    "properties": [key_prop, "hs_task_status", "hs_createdate"],
                    "limit": self.config.page_size}
            results = self.transport.search(self.task_type, body).get("results") or []
            for record in results:
                props = record.get("properties") or {}
                key = str(props.get(key_prop) or "")
                yield KeyedTask(task_id=str(record["id"]), key=key, lead_id=key.split(":", 1)[0],
                                created=str(props.get("hs_createdate") or record.get("createdAt") or ""),
                                closed=props.get("hs_task_status") == "COMPLETED")
            if len(results) < self.config.page_size:
                return
            last_id = max(int(r["id"]) for r in results)
