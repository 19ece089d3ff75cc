"""``leadflow bench``: throughput, API efficiency and memory of ``sync_leads`` against the sandbox.

One measurement (``measure``) runs in a fresh Python process (the CLI re-executes itself with
``python -m benchmarks.bench``), so every size starts from a clean heap and Prefect is configured
before it is imported. In that process:

1. the sandbox starts in its own process (``start_sandbox_process``), seeded with N leads per CRM,
   optionally enforcing a rate-limit SPEC;
2. Prefect runs ephemerally (``PREFECT_HOME`` and the state DB are temp dirs; the task-run
   recorder batch settings of docs/operations.md); a no-op flow starts the ephemeral server
   before any timer (its start-up is reported as ``prefect_startup_seconds``);
3. HubSpot only: the leadflow properties are created (``hubspot_setup``), as ``make demo`` does;
4. **backfill**: the first ``sync_leads`` (no watermark: the whole CRM);
5. K leads are changed through the real client (HubSpot batch update, Salesforce sObject
   Collections), then the sandbox stats are reset;
6. **incremental**: ``sync_leads`` again (reads from the watermark);
7. **no_change**: ``sync_leads`` once more.

For each run: wall seconds, leads/s, CPU ms per lead of this process (``getrusage`` deltas, also
split into user and system seconds), the garbage collector's collections and seconds (``gc_seconds``,
``gc_collections`` per generation), peak RSS during the run (a psutil sampling thread, every 50 ms), the summary's counts, the sandbox's
requests by endpoint and status, 429s seen, the backfill's wall and CPU per lead by tenths of its
writes (``by_tenth``, from a sampling thread every 0.5 s), and the minimum number of CRM calls the run's work
needs (definition in benchmarks/README.md) with the ratio calls / minimum. The minimum is computed
from what the connector asked the CRM for (distinct companies read, records written, task keys
looked up and created), recorded by wrapping the connector's transport methods in this process only.
"""

from __future__ import annotations

import gc
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.startup import bench_log_dir, git_revision, startup_limit

# Page and batch sizes the CRMs allow (the sandbox enforces the same ones).
HUBSPOT_LIST_PAGE = 100  # GET /crm/v3/objects/contacts: limit <= 100
HUBSPOT_SEARCH_PAGE = 200  # POST .../search: limit <= 200
HUBSPOT_BATCH = 100  # batch read / update / create, v4 associations batch read
HUBSPOT_SEARCH_IN_VALUES = 100  # values of one IN filter in a search
SALESFORCE_QUERY_BATCH = 2000  # records per query / queryMore response...
SALESFORCE_LONG_TEXT_BATCH = 200  # ...but 200 when the SELECT has 2+ custom long text area fields
SALESFORCE_COLLECTION = 200  # records per sObject Collections call
SALESFORCE_IN_IDS = 200  # task keys per SOQL IN lookup (what the connector and the query length allow)

RUNS = ("backfill", "incremental", "no_change")


# ---------------------------------------------------------------------------------- the minimum


NATIVE_HUBSPOT_OBJECTS = ("calls", "meetings", "deals")
NATIVE_SALESFORCE_OBJECTS = ("Task", "Event", "CampaignMember")


def _ceil(count: int, size: int) -> int:
    return math.ceil(count / size) if count > 0 else 0


def minimum_calls(crm: str, run: str, work: dict[str, int]) -> dict[str, int]:
    """The fewest CRM calls that do this run's work; ``work`` holds record counts (see README).

    ``work``: ``leads`` (leads the run had to read: every lead for a backfill, the leads changed
    since the watermark otherwise), ``companies`` (distinct companies of those leads; HubSpot),
    ``lead_writes`` / ``company_writes`` (distinct records written), ``task_lookups`` (distinct
    task keys not known locally), ``tasks_created``, ``tasks_closed``; Salesforce: ``query_batch``,
    ``bulk_threshold`` and ``bulk_max_records`` (default: the connector config's)."""
    out: dict[str, int] = {}
    leads = work.get("leads", 0)
    read = work.get("read_leads", leads)  # with echoes: leads + leadflow's own recent writes
    if crm == "hubspot":
        if run == "backfill":
            out["read"] = max(1, _ceil(read, HUBSPOT_LIST_PAGE))  # companies' ids come inline
        else:
            out["read"] = max(1, _ceil(read, HUBSPOT_SEARCH_PAGE))
            out["associations"] = _ceil(leads, HUBSPOT_BATCH)  # search results carry no associations
        out["company_read"] = _ceil(work.get("companies", 0), HUBSPOT_BATCH)
        # native signals: the associated calls, meetings and deals (the list backfill has their ids
        # inline; a search window asks the v4 associations of the contacts whose gate is open)
        for kind in NATIVE_HUBSPOT_OBJECTS:
            if run != "backfill":
                out[f"{kind}_associations"] = _ceil(work.get(f"{kind}_contacts", 0), HUBSPOT_BATCH)
            out[f"{kind}_read"] = _ceil(work.get(kind, 0), HUBSPOT_BATCH)
        out["lead_write"] = _ceil(work.get("lead_writes", 0), HUBSPOT_BATCH)
        out["company_write"] = _ceil(work.get("company_writes", 0), HUBSPOT_BATCH)
        out["task_lookup"] = _ceil(work.get("task_lookups", 0), HUBSPOT_SEARCH_IN_VALUES)
        out["task_create"] = _ceil(work.get("tasks_created", 0), HUBSPOT_BATCH)
        out["task_link"] = _ceil(work.get("tasks_created", 0), HUBSPOT_BATCH)  # an upsert carries no association
        out["task_close"] = _ceil(work.get("tasks_closed", 0), HUBSPOT_BATCH)
        out["compare_read"] = _ceil(work.get("compare_leads", 0), HUBSPOT_BATCH) + \
            _ceil(work.get("compare_companies", 0), HUBSPOT_BATCH)
    else:
        from connectors.crm.salesforce import SalesforceConfig

        defaults = SalesforceConfig(instance_url="")
        batch = work.get("query_batch") or SALESFORCE_QUERY_BATCH
        threshold = work.get("bulk_threshold", defaults.bulk_threshold)
        if threshold and read > threshold and read > batch:  # first REST batch, job create, one poll, result sets
            out["read"] = 3 + _ceil(read - batch, work.get("bulk_max_records") or defaults.bulk_max_records)
        else:  # subquery results (native activities) count toward the batch size
            out["read"] = max(1, _ceil(read + work.get("inline_children", 0), batch))
        for kind in NATIVE_SALESFORCE_OBJECTS:  # bulk rows' activities (REST: subqueries, no call)
            per_window = max(1, _ceil(work.get(f"{kind}_window_rows", 0), batch)) if work.get(f"{kind}_windows") else 0
            out[f"{kind}_query"] = _ceil(work.get(f"{kind}_leads", 0), SALESFORCE_IN_IDS) + per_window
        out["lead_write"] = _ceil(work.get("lead_writes", 0), SALESFORCE_COLLECTION)
        out["task_lookup"] = _ceil(work.get("task_lookups", 0), SALESFORCE_IN_IDS)
        out["task_create"] = _ceil(work.get("tasks_created", 0), SALESFORCE_COLLECTION)
        out["task_close"] = _ceil(work.get("tasks_closed", 0), SALESFORCE_COLLECTION)
        out["compare_read"] = _ceil(work.get("compare_leads", 0), SALESFORCE_IN_IDS)
        from connectors.crm.factory import own_writes_from_env

        own = own_writes_from_env()
        if own.get("skip_own_writes") and not own.get("integration_user_id"):
            out["userinfo"] = 1  # the integration user's id, asked once per run
    out = {k: v for k, v in out.items() if v}
    out["total"] = sum(out.values())
    return out


# ---------------------------------------------------------------------- what the connector asked


class WorkRecorder:
    """Distinct record ids the connector read, wrote, looked up and created, per run (wraps the
    transport methods of the connector classes in this process; the code under test is unchanged)."""

    def __init__(self) -> None:
        self.sets: dict[str, set[str]] = defaultdict(set)
        self._lock = threading.Lock()
        self._installed = False

    def reset(self) -> None:
        with self._lock:
            self.sets = defaultdict(set)

    def add(self, kind: str, ids: Any) -> None:
        with self._lock:
            self.sets[kind].update(str(i) for i in ids)

    def size_bytes(self) -> int:
        """Memory the recorded ids hold (the bench's own, inside the measured RSS)."""
        with self._lock:
            return sum(sys.getsizeof(v) + sum(sys.getsizeof(i) for i in v) for v in self.sets.values())

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {k: len(v) for k, v in self.sets.items()}

    def count(self, kind: str) -> int:
        with self._lock:
            return len(self.sets.get(kind, ()))

    def install(self) -> None:
        if self._installed:
            return
        self._installed = True
        from connectors.crm import hubspot, salesforce

        rec = self
        transport = hubspot.HubSpotTransport
        batch_read, batch_update = transport.batch_read, transport.batch_update
        batch_create, search = transport.batch_create, transport.search

        def hs_batch_read(self, object_type, ids, properties):
            rec.add(f"read:{object_type}", ids)
            return batch_read(self, object_type, ids, properties)

        def hs_batch_update(self, object_type, inputs):
            rec.add(f"write:{object_type}", [i["id"] for i in inputs])
            return batch_update(self, object_type, inputs)

        def hs_batch_create(self, object_type, inputs):
            rec.add(f"create:{object_type}", [i.get("objectWriteTraceId") or id(i) for i in inputs])
            return batch_create(self, object_type, inputs)

        def hs_search(self, object_type, body):
            if object_type == "tasks":
                for group in body.get("filterGroups") or []:
                    for flt in group.get("filters") or []:
                        if flt.get("operator") == "IN":
                            rec.add("lookup:tasks", flt.get("values") or [])
            data = search(self, object_type, body)
            if object_type == "contacts":  # the contacts a window read fetched (changed, or echoes)
                rec.add("fetched:contacts", [r["id"] for r in data.get("results") or []])
            return data

        transport.batch_read, transport.batch_update = hs_batch_read, hs_batch_update
        transport.batch_create, transport.search = hs_batch_create, hs_search
        batch_read_by, batch_upsert = transport.batch_read_by, transport.batch_upsert

        def hs_batch_read_by(self, object_type, id_property, values, properties):
            rec.add(f"lookup:{object_type}", values)
            return batch_read_by(self, object_type, id_property, values, properties)

        def hs_batch_upsert(self, object_type, inputs):
            rec.add(f"create:{object_type}", [i["id"] for i in inputs])
            return batch_upsert(self, object_type, inputs)

        transport.batch_read_by, transport.batch_upsert = hs_batch_read_by, hs_batch_upsert
        associations = transport.associations

        def hs_associations(self, from_type, to_type, ids, endpoint="associations.batch_read"):
            rec.add(f"contacts:{to_type}", ids)
            return associations(self, from_type, to_type, ids, endpoint=endpoint)

        transport.associations = hs_associations

        connector = salesforce.SalesforceConnector
        collection, find_tasks = connector._collection, connector._find_tasks

        def sf_collection(self, method, records):
            for record in records:
                kind = (record.get("attributes") or {}).get("type", "?")
                if method == "POST":
                    rec.add(f"create:{kind}", [record.get(self.task_key) or id(record)])
                else:
                    rec.add(f"write:{kind}", [record.get("id")])
            return collection(self, method, records)

        def sf_find_tasks(self, keys):
            rec.add("lookup:tasks", keys)
            return find_tasks(self, keys)

        connector._collection, connector._find_tasks = sf_collection, sf_find_tasks
        upsert_collection = connector._upsert_collection

        def sf_upsert_collection(self, records):
            rec.add("create:Task", [record.get(self.task_key) for record in records])
            return upsert_collection(self, records)

        connector._upsert_collection = sf_upsert_collection

        child_rows = connector._child_rows

        def sf_child_rows(self, child, lead_ids=None, leads=None):
            rows = child_rows(self, child, lead_ids, leads)
            if leads is None:
                rec.add(f"children:{child.object}", lead_ids or [])
            else:  # one semi-join for the window: its rows, and the window itself
                rec.add(f"window:{child.object}", [leads])
                rec.add(f"window_rows:{child.object}", [row.get("Id") for row in rows])
            return rows

        connector._child_rows = sf_child_rows
        inline_children = connector._inline_children

        def sf_inline_children(self, child, records):
            for lead_id, row in inline_children(self, child, records):
                rec.add("inline_children", [f"{child.object}:{row.get('Id')}"])
                yield lead_id, row

        connector._inline_children = sf_inline_children

        for cls in (hubspot.HubSpotConnector, salesforce.SalesforceConnector):
            cls.read_current = _recording_read_current(rec, cls.read_current)


def _recording_read_current(rec: WorkRecorder, read_current: Any) -> Any:
    """Compare-before-write reads (``connector.read_current``), by object."""

    def recorded(self, obj, object_ids, fields):
        rec.add(f"compare:{obj}", object_ids)
        return read_current(self, obj, object_ids, fields)

    return recorded


def work_for(crm: str, run: str, recorded: dict[str, int], total_leads: int, changed: int) -> dict[str, int]:
    """The record counts the minimum is computed from (see ``minimum_calls``): the leads the run
    must read are every lead (backfill), the K leads changed since the last run (incremental) or
    none (no change); the writes, lookups and creates are the distinct records the connector sent,
    at most one lead write per lead to read."""
    leads = {"backfill": total_leads, "incremental": changed}.get(run, 0)
    if crm == "hubspot":
        return {
            "leads": leads,
            "companies": recorded.get("read:companies", 0),
            "lead_writes": min(recorded.get("write:contacts", 0), leads),
            "company_writes": recorded.get("write:companies", 0),
            "task_lookups": recorded.get("lookup:tasks", 0),
            "tasks_created": recorded.get("create:tasks", 0),
            "tasks_closed": recorded.get("write:tasks", 0),
            "compare_leads": recorded.get("compare:lead", 0),
            "compare_companies": recorded.get("compare:company", 0),
            **{kind: recorded.get(f"read:{kind}", 0) for kind in NATIVE_HUBSPOT_OBJECTS},
            **{f"{kind}_contacts": recorded.get(f"contacts:{kind}", 0) for kind in NATIVE_HUBSPOT_OBJECTS},
        }
    return {
        "leads": leads,
        "lead_writes": min(recorded.get("write:Lead", 0), leads),
        "task_lookups": recorded.get("lookup:tasks", 0),
        "tasks_created": recorded.get("create:Task", 0),
        "tasks_closed": recorded.get("write:Task", 0),
        "compare_leads": recorded.get("compare:lead", 0),
        "inline_children": recorded.get("inline_children", 0),
        **{f"{kind}_leads": recorded.get(f"children:{kind}", 0) for kind in NATIVE_SALESFORCE_OBJECTS},
        **{f"{kind}_windows": recorded.get(f"window:{kind}", 0) for kind in NATIVE_SALESFORCE_OBJECTS},
        **{f"{kind}_window_rows": recorded.get(f"window_rows:{kind}", 0) for kind in NATIVE_SALESFORCE_OBJECTS},
    }


# ------------------------------------------------------------------------------------ measuring


class RssSampler:
    """Peak RSS of this process between ``start()`` and ``stop()``, sampled every ``interval`` s."""

    def __init__(self, interval: float = 0.05):
        import psutil

        self.process = psutil.Process()
        self.interval = interval
        self.peak = 0
        self.peak_fds = 0  # open file descriptors (sockets, SQLite files): SQLite needs one per journal
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            self.peak_fds = max(self.peak_fds, self.process.num_fds())
            self._stop.wait(self.interval)

    def start(self) -> None:
        self.peak = self.process.memory_info().rss
        self.peak_fds = self.process.num_fds()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="bench-rss", daemon=True)
        self._thread.start()

    def stop(self) -> int:
        self._stop.set()
        if self._thread:
            self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)
        return self.peak


class ProgressTrace:
    """(seconds, CPU seconds of this process, leads written) every ``interval`` s during a run, so
    one backfill yields its cost per lead by tenths (``by_tenths``), free of the machine's drift
    between two runs."""

    def __init__(self, done: Callable[[], int], interval: float = 0.5):
        self.done = done
        self.interval = interval
        self.samples: list[tuple[float, float, int]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        self.samples.append((time.perf_counter(), time.process_time(), self.done()))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def start(self) -> None:
        self.samples = []
        self._sample()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="bench-progress", daemon=True)
        self._thread.start()

    def stop(self) -> list[tuple[float, float, int]]:
        self._stop.set()
        if self._thread:
            self._thread.join()
        self._sample()
        return self.samples


def _when(points: list[tuple[float, float, int]], mark: float) -> tuple[float, float]:
    """(seconds, CPU seconds) when the count of leads written reached ``mark``, interpolated
    between the two points around it."""
    for (t0, c0, d0), (t1, c1, d1) in zip(points, points[1:]):
        if d1 >= mark:
            share = (mark - d0) / (d1 - d0) if d1 > d0 else 1.0
            return t0 + share * (t1 - t0), c0 + share * (c1 - c0)
    return points[-1][0], points[-1][1]


def _write_points(samples: list[tuple[float, float, int]]) -> list[tuple[float, float, int]]:
    """The first sample and the last of each rise of the count of leads written. A run writes in
    bursts (its pages of up to 2,000 leads, two in flight, often settle together, one burst seen over
    a few samples) with nothing written for seconds in between: the count is taken to rise evenly
    from the end of one burst to the end of the next, where the work of each burst was done."""
    points = samples[:1]
    for now, after in zip(samples[1:], samples[2:] + [None]):
        rising = now[2] != points[-1][2]
        if rising and (after is None or after[2] == now[2]):
            points.append(now)
    return points


def by_tenths(samples: list[tuple[float, float, int]], parts: int = 10) -> dict[str, Any] | None:
    """Wall and CPU ms per lead of each tenth of a run's writes, and the whole run's per lead over
    its first tenth's (``*_whole_over_first_tenth``). It shows whether a run gets dearer per lead
    as the state store and the CRM fill, free of the drift between two runs. It is not the growth
    from N/10 leads to N: the first tenth of a big portal is not a small portal's run (its caches
    start as cold among ten times the organizations). None when the run wrote under 100 leads a tenth."""
    total = samples[-1][2] if samples else 0
    if total < 100 * parts:
        return None
    size, points = total / parts, _write_points(samples)
    # the last tenth ends with the run (its held tasks, the watermark), not with its last write
    marks = [samples[0][:2]] + [_when(points, size * k) for k in range(1, parts)] + [samples[-1][:2]]
    wall = [(b[0] - a[0]) * 1000 / size for a, b in zip(marks, marks[1:])]
    cpu = [(b[1] - a[1]) * 1000 / size for a, b in zip(marks, marks[1:])]

    def over_first(per_tenth: list[float]) -> float | None:
        return round(statistics.fmean(per_tenth) / per_tenth[0], 3) if per_tenth[0] > 0 else None

    return {"leads_per_tenth": round(size), "wall_ms_per_lead": [round(v, 3) for v in wall],
            "cpu_ms_per_lead": [round(v, 3) for v in cpu],
            "wall_whole_over_first_tenth": over_first(wall), "cpu_whole_over_first_tenth": over_first(cpu)}


class GcMeter:
    """Collections of the garbage collector and the seconds they took, per generation, since
    ``reset()`` (a ``gc.callbacks`` hook; a collection runs in whichever thread triggered it)."""

    def __init__(self) -> None:
        self._started: dict[int, float] = {}
        self.reset()
        gc.callbacks.append(self._observe)

    def reset(self) -> None:
        self.counts = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]

    def _observe(self, phase: str, info: dict[str, Any]) -> None:
        thread = threading.get_ident()
        if phase == "start":
            self._started[thread] = time.perf_counter()
        elif thread in self._started:
            generation = info["generation"]
            self.counts[generation] += 1
            self.seconds[generation] += time.perf_counter() - self._started.pop(thread)

    def report(self) -> dict[str, Any]:
        return {"gc_seconds": round(sum(self.seconds), 3), "gc_collections": list(self.counts),
                "gc_seconds_by_generation": [round(s, 3) for s in self.seconds]}


def _cpu_times() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def _crm_endpoints(stats: dict[str, Any], crm: str) -> dict[str, dict[str, int]]:
    return {name: counts for name, counts in (stats.get("endpoints") or {}).items() if name.startswith(crm + ".")}


def _count(endpoints: dict[str, dict[str, int]], status: str | None = None) -> int:
    return sum(n for counts in endpoints.values() for code, n in counts.items() if status is None or code == status)


def _spec_rate(spec: str | None, crm: str) -> tuple[int, float] | None:
    """``hubspot=190/10s`` -> (190, 10.0): the burst limit the sandbox enforces for ``crm`` (only
    HubSpot has one), read with the sandbox's own parser; None when the SPEC sets none."""
    from sandbox.faults import parse_rate_limits

    limits = parse_rate_limits(spec)
    if crm != "hubspot" or not limits.hubspot_max:
        return None
    return limits.hubspot_max, limits.hubspot_interval_ms / 1000


def _client_rate(spec: str | None) -> str:
    """The connector's own HubSpot limit for this measurement: the sandbox's, or off when the
    sandbox enforces none (an unthrottled run measures the pipeline, not HubSpot's allowance)."""
    rate = _spec_rate(spec, "hubspot")
    return f"{rate[0]}/{rate[1]:g}s" if rate else "off"


def _server_ms(handle: Any) -> dict[str, float]:
    """Time the sandbox spent answering, by endpoint (from its request log; it keeps 10,000 rows)."""
    totals: dict[str, float] = defaultdict(float)
    for row in handle.requests():
        totals[row["endpoint"]] += row.get("duration_ms") or 0.0
    return {name: round(ms, 1) for name, ms in sorted(totals.items())}


def salesforce_query_batch(handle: Any) -> int:
    """The REST query batch size Salesforce allows for the connector's SELECT: 2,000, or 200 when it
    selects two or more custom long text area fields (checked with describe, as Salesforce does)."""
    from connectors.crm.factory import connector_from_env

    fields = set(connector_from_env("salesforce").fields)
    described = handle.salesforce_client().Lead.describe()["fields"]
    long_text = [f["name"] for f in described if f["name"] in fields and f.get("type") == "textarea"
                 and f.get("custom") and int(f.get("length") or 0) > 255]
    return SALESFORCE_LONG_TEXT_BATCH if len(long_text) >= 2 else SALESFORCE_QUERY_BATCH


def change_leads(handle: Any, crm: str, count: int) -> list[str]:
    """Change ``count`` leads through the real client, as a sales rep or a form would; their ids."""
    if count <= 0:
        return []
    stamp = time.strftime("%H:%M:%S")
    if crm == "hubspot":
        from hubspot.crm.contacts import BatchInputSimplePublicObjectBatchInput

        client = handle.hubspot_client()
        ids: list[str] = []
        after = None
        while len(ids) < count:
            page = client.crm.contacts.basic_api.get_page(limit=min(100, count - len(ids)), after=after)
            ids.extend(r.id for r in page.results)
            if not page.paging or not page.paging.next:
                break
            after = page.paging.next.after
        for start in range(0, len(ids), 100):
            inputs = [{"id": i, "properties": {"pain_point": f"bench change {stamp}: needs prior auth automation",
                                               "discovery_need_confirmed": "true"}}
                      for i in ids[start:start + 100]]
            client.crm.contacts.batch_api.update(
                batch_input_simple_public_object_batch_input=BatchInputSimplePublicObjectBatchInput(inputs=inputs))
        return ids
    sf = handle.salesforce_client(user="rep")  # a person's edit: LastModifiedById is the rep
    ids = [r["Id"] for r in sf.query(f"SELECT Id FROM Lead ORDER BY Id LIMIT {int(count)}")["records"]]
    for start in range(0, len(ids), 200):
        records = [{"attributes": {"type": "Lead"}, "id": i,
                    "Pain_Point__c": f"bench change {stamp}: needs prior auth automation",
                    "Need_Confirmed__c": True} for i in ids[start:start + 200]]
        sf.restful("composite/sobjects", method="PATCH", json={"allOrNone": False, "records": records})
    return ids


PHASES = ("sandbox_start", "prefect_start", "setup", "backfill", "change_leads", "incremental", "no_change")


def bench_environment(workdir: Path) -> dict[str, str]:
    """The environment of one measurement: leadflow's Prefect defaults (``leadflow.prefect_env``),
    the bench's start-up limit unless the user set one, and Prefect, leadflow's home and the state
    DB (SQLite) under ``workdir``."""
    from leadflow.prefect_env import DEFAULTS, QUIET_CONSOLE, STARTUP_TIMEOUT_VARIABLE

    return {**DEFAULTS, **QUIET_CONSOLE, "PREFECT_LOGGING_LEVEL": "WARNING",
            STARTUP_TIMEOUT_VARIABLE: startup_limit(), "PREFECT_HOME": str(workdir / "prefect"), "LEADFLOW_HOME": str(workdir / "home"),
            "LEADFLOW_DATABASE_URL": f"sqlite:///{workdir / 'leadflow.db'}"}


def error_line(exc: BaseException) -> str:
    """``Type: first line of the message``, redacted and at most one line."""
    from leadflow.errors import one_line, redact

    message = str(exc).strip().splitlines()
    return one_line(redact(f"{type(exc).__name__}: {message[0]}" if message else type(exc).__name__))


def _write_json(path: Path | None, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` whole or not at all (a reader never sees half a file)."""
    if path is None:
        return
    partial = path.with_name(path.name + ".part")
    partial.write_text(json.dumps(data, default=str))
    os.replace(partial, path)


def measure(crm: str, leads: int, rate_limit: str | None = None, changed: int = 100,
            random_seed: int = 42, profile: str | None = None, lookback: int | None = None,
            workdir: Path | None = None, result_path: Path | None = None,
            runs: tuple[str, ...] = RUNS) -> dict[str, Any]:
    """One full measurement in this process (Prefect must not have been imported with other
    settings). ``profile``: a path; the backfill runs under pyinstrument and its HTML lands there.
    ``lookback``: overrides ``settings.LOOKBACK_SECONDS`` (an experiment: with the default 300 s,
    every run of a benchmark shorter than that re-reads the backfill's own writes). ``runs``: which
    of backfill, incremental, no_change to run (in that order; the backfill always runs).

    ``workdir`` holds Prefect's home and the state DB; its owner removes it once this process has
    exited (Prefect's temporary server writes to its database until then). The result is always
    returned: a phase that raises ends the measurement with ``error`` = ``{"phase", "error"}`` and
    the runs measured before it. After each phase the result so far is written to ``result_path``."""
    workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="leadflow-bench-"))
    os.environ.update(bench_environment(workdir))  # before Prefect is imported
    from leadflow import settings

    if lookback is not None:
        settings.LOOKBACK_SECONDS = lookback
    result: dict[str, Any] = {
        "crm": crm, "leads": leads, "changed": changed, "rate_limit": rate_limit, "random_seed": random_seed,
        "lookback_seconds": settings.LOOKBACK_SECONDS, "workdir": str(workdir),
        "python": sys.version.split()[0], "pid": os.getpid(), "revision": git_revision(),
        "cpus": os.cpu_count(), "runs": {}, "phase": None, "runs_requested": list(runs),
    }

    def enter(phase: str) -> None:
        result["phase"] = phase
        _write_json(result_path, result)

    try:
        _measure(result, enter, crm, leads, rate_limit, changed, random_seed, profile, runs)
    except Exception as exc:  # noqa: BLE001 - the measurement so far is the answer, with what ended it
        import traceback

        traceback.print_exc()  # the whole of it in the stderr file the result names
        result["error"] = {"phase": result["phase"], "error": error_line(exc)}
    else:
        result["phase"] = "done"
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    result["targets"] = targets(result)
    _write_json(result_path, result)
    return result


def start_prefect(result: dict[str, Any]) -> None:
    """Prefect's temporary server up and a first flow run done, before any timer: its start-up
    (``prefect_startup_seconds``, limit ``prefect_startup_limit_seconds``) is not in the runs."""
    import prefect
    from prefect import flow

    from leadflow.prefect_env import ensure_server, startup_timeout

    @flow(name="bench-warmup")
    def warmup() -> int:
        return 1

    result["prefect"] = prefect.__version__
    result["prefect_startup_limit_seconds"] = startup_timeout()
    started = ensure_server(lambda line: None)
    result["prefect_startup_seconds"] = round(started, 2) if started is not None else 0.0
    t0 = time.monotonic()
    warmup()
    result["prefect_first_flow_seconds"] = round(time.monotonic() - t0, 2)


def _measure(result: dict[str, Any], enter: Any, crm: str, leads: int, rate_limit: str | None, changed: int,
             random_seed: int, profile: str | None, runs: tuple[str, ...] = RUNS) -> None:
    from sandbox.server import start_sandbox_process

    recorder = WorkRecorder()
    recorder.install()
    sampler = RssSampler()
    enter("sandbox_start")
    started = time.monotonic()
    with start_sandbox_process(leads, random_seed=random_seed, rate_limits=rate_limit,
                               startup_timeout=max(600, leads / 250)) as handle:
        result["sandbox_start_seconds"] = round(time.monotonic() - started, 1)
        try:
            _measure_runs(result, enter, handle, recorder, sampler, crm, leads, rate_limit, changed, profile, runs)
        except Exception:
            result["sandbox_exit_code"] = handle.process.poll() if handle.process else None  # None: still running
            raise


def _measure_runs(result: dict[str, Any], enter: Any, handle: Any, recorder: WorkRecorder, sampler: RssSampler,
                  crm: str, leads: int, rate_limit: str | None, changed: int, profile: str | None,
                  runs: tuple[str, ...]) -> None:
    from leadflow import settings
    from sandbox.environment import environment, sandbox_environment

    collector = GcMeter()
    with environment({**sandbox_environment(handle), "LEADFLOW_SALESFORCE_SKIP_OWN_WRITES": "1",
                      "LEADFLOW_HUBSPOT_RATE_LIMIT": _client_rate(rate_limit)}):
        enter("prefect_start")
        start_prefect(result)
        from flows.sync import sync_leads

        enter("setup")
        if crm == "hubspot":
            from connectors.crm.factory import connector_from_env
            from connectors.crm.setup import hubspot_setup

            connector = connector_from_env("hubspot")
            hubspot_setup(connector)
            result["write_fences"] = connector.sync_marker() is not None  # state/fences.py
        else:
            result["salesforce_query_batch"] = salesforce_query_batch(handle)
        handle.reset_stats()
        result["rss_before_mb"] = round(sampler.process.memory_info().rss / 2**20, 1)
        history: list[tuple[float, float, set[str]]] = []  # (start, end, lead ids written) per run
        written_kind = "write:contacts" if crm == "hubspot" else "write:Lead"
        changed_ids: set[str] = set()
        for run in (r for r in RUNS if r == "backfill" or r in runs):
            if run == "incremental":
                enter("change_leads")
                changed_ids = set(change_leads(handle, crm, changed))
                handle.reset_stats()
            enter(run)
            # leadflow's own writes inside this run's read window (watermark - lookback, now):
            # re-read (and skipped) by a timestamp-based incremental read
            window = history[-1][0] - settings.LOOKBACK_SECONDS if history else None
            echoes = set().union(*(ids for _, end, ids in history if window is not None and end >= window))
            if crm == "salesforce" or result.get("write_fences"):
                # Salesforce skip_own_writes: LastModifiedById leaves leadflow's writes out of the read;
                # HubSpot write fences: the read asks only for records modified after leadflow's write
                echoes = set()
            started_at = time.time()
            recorder.reset()
            progress = ProgressTrace(lambda: recorder.count(written_kind))
            progress.start()
            sampler.start()
            collector.reset()
            (user0, sys0), wall0 = _cpu_times(), time.perf_counter()
            if profile and run == "backfill":
                from pyinstrument import Profiler

                profiler = Profiler(interval=0.002)
                profiler.start()
                summary = sync_leads(crm)
                profiler.stop()
                Path(profile).write_text(profiler.output_html())
                Path(profile).with_suffix(".txt").write_text(profiler.output_text(unicode=False, color=False))
            else:
                summary = sync_leads(crm)
            wall, (user1, sys1) = time.perf_counter() - wall0, _cpu_times()
            user, system = user1 - user0, sys1 - sys0
            cpu = user + system
            split = {"cpu_user_seconds": round(user, 2), "cpu_sys_seconds": round(system, 2), **collector.report()}
            peak = sampler.stop()
            trace = progress.stop()
            stats = handle.stats()
            server_ms = _server_ms(handle)
            handle.reset_stats()
            instrumentation = recorder.size_bytes()
            written = set(recorder.sets.get(written_kind, set()))
            history.append((started_at, time.time(), written))
            report = _run_report(crm, run, leads, changed, summary, stats, recorder.counts(), wall, cpu, peak,
                                 rate_limit, result.get("salesforce_query_batch"))
            if run != "backfill" and crm == "hubspot":
                searches = report["api_calls_by_endpoint"].get("hubspot.contacts.search", 0)
                report["search_calls"] = searches
                # fence searches (one filter group per live write fence, five a search) are overhead
                # above the minimum, which counts only the pages of the leads that changed
                report["search_calls_over_minimum_read"] = searches - report["minimum_calls"].get("read", 0)
                report["fetched_leads"] = recorder.counts().get("fetched:contacts", 0)
            if run != "backfill":
                to_read = (changed_ids if run == "incremental" else set()) | echoes
                report["echo_reads"] = len(echoes - (changed_ids if run == "incremental" else set()))
                with_echoes = minimum_calls(crm, run, dict(report["work"], read_leads=len(to_read)))
                report["minimum_calls_with_echoes"] = with_echoes
                report["calls_over_minimum_with_echoes"] = round(report["api_calls"] / with_echoes["total"], 3)
            report.update(split)
            if run == "backfill" and (tenths := by_tenths(trace)):
                report["by_tenth"] = tenths
                report["wall_whole_over_first_tenth"] = tenths["wall_whole_over_first_tenth"]
                report["cpu_whole_over_first_tenth"] = tenths["cpu_whole_over_first_tenth"]
            report["sandbox_ms_by_endpoint"] = server_ms
            report["peak_open_fds"] = sampler.peak_fds
            report["bench_instrumentation_mb"] = round(
                (instrumentation + sum(sys.getsizeof(ids) + sum(map(sys.getsizeof, ids))
                                       for _, _, ids in history)) / 2**20, 1)
            # the peak without the ids the bench itself keeps to count distinct records
            report["pipeline_peak_rss_mb"] = round(report["peak_rss_mb"] - report["bench_instrumentation_mb"], 1)
            result["runs"][run] = report


def _run_report(crm: str, run: str, leads: int, changed: int, summary: dict[str, Any], stats: dict[str, Any],
                recorded: dict[str, int], wall: float, cpu: float, peak: int, rate_limit: str | None,
                query_batch: int | None = None) -> dict[str, Any]:
    endpoints = _crm_endpoints(stats, crm)
    calls = _count(endpoints)
    work = work_for(crm, run, recorded, leads, changed)
    if query_batch:
        work["query_batch"] = query_batch
    minimum = minimum_calls(crm, run, work)
    read = int(summary.get("read", 0))
    rate = _spec_rate(rate_limit, crm)
    limit_seconds = calls * rate[1] / rate[0] if rate else None
    others = {name: counts for name, counts in (stats.get("endpoints") or {}).items() if name not in endpoints}
    return {
        "wall_seconds": round(wall, 2),
        "leads_read": read,
        "leads_per_second": round(read / wall, 1) if wall > 0 else None,
        "cpu_ms_per_lead": round(cpu * 1000 / read, 3) if read else None,
        "cpu_seconds": round(cpu, 2),
        "peak_rss_mb": round(peak / 2**20, 1),
        "summary": {k: summary.get(k) for k in ("read", "changed", "unchanged", "stage_moves", "tasks_created",
                                                 "tasks_closed", "failed", "quarantined", "pages", "api_calls",
                                                 "retried_pending", "stopped_early")},
        "api_calls": calls,
        "api_calls_by_endpoint": {name: sum(c.values()) for name, c in endpoints.items()},
        "api_status_by_endpoint": endpoints,
        "other_calls_by_endpoint": {name: sum(c.values()) for name, c in others.items()},
        "work": work,
        "minimum_calls": minimum,
        "calls_over_minimum": round(calls / minimum["total"], 3) if minimum["total"] else None,
        "http_429": _count(endpoints, "429"),
        "failures_surfaced": int(summary.get("failed") or 0) + (1 if summary.get("stopped_early") else 0),
        "rate_limit_seconds": round(limit_seconds, 2) if limit_seconds else None,
        "wall_over_rate_limit": round(wall / limit_seconds, 3) if limit_seconds else None,
    }


def targets(result: dict[str, Any]) -> dict[str, Any]:
    """The issue #9 targets this measurement can judge (size-dependent ones only at their size)."""
    runs = result["runs"]
    out: dict[str, Any] = {}
    back = runs.get("backfill") or {}
    if back.get("calls_over_minimum") is not None:
        out["backfill_calls_le_1.05x_min"] = back["calls_over_minimum"] <= 1.05
    if "no_change" in runs:
        out["no_change_le_2_calls"] = runs["no_change"]["api_calls"] <= 2
    out["no_429_surfaced"] = all(r["failures_surfaced"] == 0 for r in runs.values())
    if back.get("wall_over_rate_limit") is not None:
        out["backfill_le_1.15x_rate_limit_time"] = back["wall_over_rate_limit"] <= 1.15
    elif result["crm"] == "hubspot":
        out["backfill_ge_1000_leads_per_s"] = (back.get("leads_per_second") or 0) >= 1000
        out["backfill_le_0.5_cpu_ms_per_lead"] = (back.get("cpu_ms_per_lead") or 99) <= 0.5
    return out


# --------------------------------------------------------------------------------- the command


def _last_error_line(path: Path) -> str:
    """The last line of a stderr file that names an exception, else its last line."""
    from leadflow.errors import one_line, redact

    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    named = [line for line in lines if ":" in line and line.split(":", 1)[0].rsplit(".", 1)[-1].endswith(
        ("Error", "Exception", "Timeout", "Interrupt", "Exit"))]
    return one_line(redact((named or lines or [""])[-1]))


def _stop_group(process: subprocess.Popen, grace: float = 15.0) -> None:
    """End the worker and what it started (the sandbox, Prefect's server): its process group."""
    import signal

    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_in_fresh_process(crm: str, leads: int, rate_limit: str | None, changed: int, random_seed: int,
                         profile: str | None = None, lookback: int | None = None, keep: bool = False,
                         timeout: float | None = None, extra_args: list[str] | None = None,
                         runs: tuple[str, ...] = RUNS) -> dict[str, Any]:
    """``measure`` in a new interpreter (clean heap, Prefect configured before import); never raises
    for a failed measurement.

    The worker's dir (Prefect's home, the state DB) is made here and removed only after the worker
    and its children have exited, so nothing still running writes into a removed dir. Its whole
    stderr goes to a file under ``bench_log_dir()``, named by ``stderr_path``, and the result beside
    it (``result_path``), so a measurement survives whatever happens to the command afterwards. The
    result is what the worker wrote last (after each phase); a worker that failed, timed out or wrote
    nothing yields ``error`` = ``{"phase", "error"}`` (``worker_exit_code`` says how it ended)."""
    from leadflow.prefect_env import STARTUP_TIMEOUT_VARIABLE

    workdir = Path(tempfile.mkdtemp(prefix="leadflow-bench-"))
    logs = bench_log_dir()
    logs.mkdir(parents=True, exist_ok=True)
    stderr_path = logs / f"bench-{crm}-{leads}-{time.strftime('%Y%m%dT%H%M%S')}-{workdir.name}.stderr"
    result_path = workdir / "result.json"
    args = [sys.executable, "-m", "benchmarks.bench", "--crm", crm, "--leads", str(leads), "--changed", str(changed),
            "--random-seed", str(random_seed), "--workdir", str(workdir), "--result", str(result_path)]
    if rate_limit:
        args += ["--rate-limit", rate_limit]
    if profile:
        args += ["--profile", profile]
    if lookback is not None:
        args += ["--lookback", str(lookback)]
    if tuple(runs) != RUNS:
        args += ["--runs", ",".join(runs)]
    args += extra_args or []
    root = Path(__file__).resolve().parent.parent
    env = {k: v for k, v in os.environ.items()
           if (not k.startswith("PREFECT_") or k == STARTUP_TIMEOUT_VARIABLE) and k != "LEADFLOW_DATABASE_URL"}
    code: int | None = None
    try:
        with open(stderr_path, "w") as stderr:
            process = subprocess.Popen(args, cwd=str(root), env=env, stdout=subprocess.DEVNULL, stderr=stderr,
                                       start_new_session=True)
            try:
                code = process.wait(timeout)
            except subprocess.TimeoutExpired:
                _stop_group(process)
        result = _read_result(result_path, crm, leads)
        if code is None:
            result["error"] = {"phase": result.get("phase") or "worker",
                               "error": f"the measurement did not end within {timeout:g} s"}
        elif code != 0:
            line = _last_error_line(stderr_path)
            failure = {"phase": result.get("phase") or "worker", "error": f"exit {code}: {line}"}
            if result.get("phase") == "done":  # every run measured; the worker failed on its way out
                result["exit_error"] = failure
            else:
                result.setdefault("error", failure)
        result["worker_exit_code"] = code
        result["stderr_path"] = str(stderr_path)
        if keep:
            result["workdir"] = str(workdir)
        kept = stderr_path.with_suffix(".json")  # the measurement outlives the command that took it
        result["result_path"] = str(kept)
        kept.write_text(json.dumps(result, default=str))
        return result
    finally:
        if not keep:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)


def _read_result(path: Path, crm: str, leads: int) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {"crm": crm, "leads": leads, "runs": {}, "phase": None}


def complete(result: dict[str, Any]) -> bool:
    """Every phase of the measurement ran (a failure on the worker's way out does not count)."""
    return result.get("phase") == "done" and not result.get("error")


def aggregate(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the complete measurements of the same configuration (the first one's details);
    the failed ones are listed under ``failures`` (phase, error, stderr path), none is dropped."""
    done = [r for r in results if complete(r)]
    failures = [{**r["error"], "stderr_path": r.get("stderr_path")} for r in results if r.get("error")]
    if len(done) <= 1:
        out = dict(done[0] if done else results[-1])
    else:
        out = dict(done[0])
        out["repeats"] = len(done)
        out["runs"] = {}
        for run in RUNS:
            rows = [r["runs"][run] for r in done if run in r["runs"]]
            if not rows:  # not measured (--runs)
                continue
            merged = dict(rows[0])
            for key in ("wall_seconds", "leads_per_second", "cpu_ms_per_lead", "cpu_seconds", "peak_rss_mb",
                        "pipeline_peak_rss_mb", "api_calls", "search_calls", "search_calls_over_minimum_read",
                        "fetched_leads",
                        "calls_over_minimum", "calls_over_minimum_with_echoes", "http_429", "failures_surfaced",
                        "wall_over_rate_limit", "wall_whole_over_first_tenth", "cpu_whole_over_first_tenth"):
                values = [row[key] for row in rows if row.get(key) is not None]
                if values:
                    merged[key] = round(statistics.median(values), 3)
                    merged[key + "_all"] = values
            out["runs"][run] = merged
        out["peak_rss_mb"] = statistics.median(r["peak_rss_mb"] for r in done)
        for key in ("prefect_startup_seconds", "sandbox_start_seconds"):
            values = [r[key] for r in done if r.get(key) is not None]
            if values:
                out[key] = statistics.median(values)
                out[key + "_all"] = values
    out["measurements"] = len(results)
    out["complete_measurements"] = len(done)
    out["stderr_paths"] = [r.get("stderr_path") for r in results]
    if failures:
        out["failures"] = failures
    out.update(headline(out))
    out["targets"] = targets(out)
    return out


def headline(result: dict[str, Any]) -> dict[str, Any]:
    """The issue #20 figures at the top of ``--json``: the backfill's CPU ms per lead and leads/s,
    the incremental run's calls and their minimum, the no-change run's calls (None: not measured)."""
    runs = result.get("runs") or {}
    back, inc, quiet = runs.get("backfill") or {}, runs.get("incremental") or {}, runs.get("no_change") or {}
    return {"cpu_ms_per_lead": back.get("cpu_ms_per_lead"), "leads_per_s": back.get("leads_per_second"),
            "incremental_calls": inc.get("api_calls"),
            "incremental_min_calls": (inc.get("minimum_calls") or {}).get("total"),
            "nochange_calls": quiet.get("api_calls")}


def render(result: dict[str, Any]) -> str:
    lines = [f"leadflow bench: {result['crm']}, {result['leads']:,} leads, {result.get('changed')} changed"
             + (f", rate limit {result['rate_limit']}" if result.get("rate_limit") else "")
             + (f" (medians of {result['repeats']})" if result.get("repeats") else "")]
    lines.append(f"  sandbox start {result.get('sandbox_start_seconds')} s, Prefect ephemeral start "
                 f"{result.get('prefect_startup_seconds')} s, process peak RSS {result.get('peak_rss_mb')} MB")
    for run, r in result["runs"].items():
        s = r["summary"]
        lines.append(f"  {run:<12} {r['wall_seconds']:>8.2f} s  {r['leads_read']:>7,} leads  "
                     f"{(r['leads_per_second'] or 0):>8,.0f} leads/s  cpu {r['cpu_ms_per_lead'] or 0:.3f} ms/lead  "
                     f"peak RSS {r['peak_rss_mb']} MB")
        lines.append(f"  {'':<12} calls {r['api_calls']} / minimum {r['minimum_calls']['total']} = "
                     f"{r['calls_over_minimum']}x  429s {r['http_429']}, failures surfaced {r['failures_surfaced']}"
                     + (f", {r['wall_over_rate_limit']}x the rate limit's time ({r['rate_limit_seconds']} s)"
                        if r.get("wall_over_rate_limit") else ""))
        lines.append(f"  {'':<12} by endpoint {r['api_calls_by_endpoint']}")
        lines.append(f"  {'':<12} minimum     {r['minimum_calls']}")
        if "search_calls" in r:
            lines.append(f"  {'':<12} contact searches {r['search_calls']} ({r['search_calls_over_minimum_read']} over "
                         f"the minimum's read pages), {r['fetched_leads']} contacts fetched")
        if "minimum_calls_with_echoes" in r:
            lines.append(f"  {'':<12} with the re-read of {r['echo_reads']} echoes of leadflow's own writes: minimum "
                         f"{r['minimum_calls_with_echoes']['total']}, ratio {r['calls_over_minimum_with_echoes']}x")
        if r.get("by_tenth"):
            t = r["by_tenth"]
            lines.append(f"  {'':<12} by tenth ({t['leads_per_tenth']:,} leads each): CPU ms per lead "
                         f"{t['cpu_ms_per_lead']}; the whole run over its first tenth: wall "
                         f"{t['wall_whole_over_first_tenth']}x, CPU {t['cpu_whole_over_first_tenth']}x")
        lines.append(f"  {'':<12} changed {s['changed']}, tasks {s['tasks_created']}, failed {s['failed']}, "
                     f"stopped early {s['stopped_early']}")
    if result.get("growth"):
        g = result["growth"]
        lines.append(f"  backfill at {g['leads'][0]:,} vs {g['leads'][1]:,} leads: wall per lead {g['wall_per_lead']}x, "
                     f"CPU per lead {g['cpu_per_lead']}x, pipeline peak RSS {g['pipeline_peak_rss']}x")
    if result.get("scoring_leads_per_s"):
        lines.append(f"  scoring alone: {result['scoring_leads_per_s']:,.0f} leads per CPU second on one core")
    start = result.get("startup_to_first_request_s")
    if start and "error" in start:
        lines.append(f"  start-up to first CRM request: FAILED in {start['error']['phase']}: {start['error']['error']}")
    elif start:
        lines.append(f"  start-up to first CRM request (median of {start['repeat']}): no Prefect server "
                     f"{start['no_prefect_server']['median']} s, running Prefect server "
                     f"{start['running_prefect_server']['median']} s")
    peer = result.get("peer")
    if peer and "error" in peer:
        lines.append(f"  peer: FAILED in {peer['error']['phase']}: {peer['error']['error']}")
    elif peer:
        from benchmarks.peer import render as render_peer

        lines.append("  " + render_peer(peer).replace("\n", "\n  "))
    for failure in result.get("failures") or ([result["error"]] if result.get("error") else []):
        lines.append(f"  FAILED in {failure['phase']}: {failure['error']}"
                     + (f" (stderr: {failure['stderr_path']})" if failure.get("stderr_path") else ""))
    lines.append("  targets: " + ", ".join(f"{k}={'met' if v else 'MISSED'}" for k, v in result["targets"].items()))
    return "\n".join(lines)


def bench(crm: str, leads: int, rate_limit: str | None = None, changed: int = 100, repeat: int = 1,
          random_seed: int = 42, lookback: int | None = None, profile: str | None = None,
          keep: bool = False, startup_repeat: int = 5, scoring: bool = True, runs: tuple[str, ...] = RUNS,
          baseline_leads: int | None = None, peer: str | None = None, peer_paging: str = "after") -> dict[str, Any]:
    """``repeat`` measurements in fresh processes (medians), then scoring alone and the start-up to
    the first CRM request; a phase that fails is reported in the result, never raised.

    ``peer`` (``dlt``): also leadflow's HubSpot read phase beside the peer on one sandbox, ``repeat``
    times each (``benchmarks.peer``): ``peer`` holds both sides, ``peer_cpu_ratio`` the ratio.

    ``baseline_leads``: also measure the backfill at that size (same repeats) and report the growth
    from it (``growth``; at 500,000 leads against 50,000 also ``rss_growth_500k``)."""
    results = [run_in_fresh_process(crm, leads, rate_limit, changed, random_seed, profile, lookback, keep, runs=runs)
               for _ in range(max(1, repeat))]
    out = aggregate(results)
    if baseline_leads:
        base = aggregate([run_in_fresh_process(crm, baseline_leads, rate_limit, changed, random_seed, lookback=lookback,
                                               runs=("backfill",)) for _ in range(max(1, repeat))])
        out["baseline"] = {k: base.get(k) for k in ("leads", "cpu_ms_per_lead", "leads_per_s", "peak_rss_mb",
                                                    "complete_measurements", "failures", "stderr_paths")}
        out["baseline"]["backfill"] = (base.get("runs") or {}).get("backfill")
        out["growth"] = growth(out, base)
        if leads == 500_000 and baseline_leads == 50_000:
            out["rss_growth_500k"] = out["growth"].get("pipeline_peak_rss")
            out["time_per_lead_growth_500k"] = out["growth"].get("wall_per_lead")
    out.setdefault("rss_growth_500k", None)
    if scoring:
        try:
            from benchmarks.scoring_bench import scoring_rate

            # qualify_batch over 50,000 leads, median of 3, leads per CPU second: inside frozen_heap
            # as a pipeline run scores, and with the collector as the process left it
            out["scoring_leads_per_s"] = scoring_rate(frozen=True)["cpu_leads_per_s"]
            out["scoring_leads_per_s_default_gc"] = scoring_rate(frozen=False)["cpu_leads_per_s"]
        except Exception as exc:  # noqa: BLE001 - reported, the measurements stand
            out["scoring_error"] = {"phase": "scoring", "error": error_line(exc)}
    out["peer_cpu_ratio"] = None
    if peer:
        try:
            from benchmarks.peer import bench_peer

            out["peer"] = bench_peer(leads, repeat, peer, random_seed, paging=peer_paging)
            out["peer_cpu_ratio"] = out["peer"]["peer_cpu_ratio"]
        except Exception as exc:  # noqa: BLE001 - reported, the measurements stand
            out["peer"] = {"error": {"phase": "peer", "error": error_line(exc)}}
    if startup_repeat > 0:  # seconds from `leadflow sync` starting to its first CRM request (benchmarks.startup)
        from benchmarks.startup import measure_startup

        try:
            out["startup_to_first_request_s"] = measure_startup(crm, startup_repeat)
        except Exception as exc:  # noqa: BLE001 - reported, the measurements stand
            out["startup_to_first_request_s"] = {"error": {"phase": "startup_to_first_request",
                                                           "error": error_line(exc)}}
    return out


def growth(result: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    """Backfill at the measured size over the baseline size: wall seconds per lead, CPU per lead,
    peak RSS of the pipeline process (without the bench's own id sets) and of the whole process."""
    big = (result.get("runs") or {}).get("backfill") or {}
    small = (baseline.get("runs") or {}).get("backfill") or {}

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a and b else None

    per_lead = [r["wall_seconds"] / r["leads_read"] if r.get("leads_read") else None for r in (big, small)]
    return {"leads": [result.get("leads"), baseline.get("leads")],
            "wall_per_lead": ratio(*per_lead),
            "cpu_per_lead": ratio(big.get("cpu_ms_per_lead"), small.get("cpu_ms_per_lead")),
            "pipeline_peak_rss": ratio(big.get("pipeline_peak_rss_mb"), small.get("pipeline_peak_rss_mb")),
            "peak_rss": ratio(big.get("peak_rss_mb"), small.get("peak_rss_mb"))}


def exit_code(result: dict[str, Any]) -> int:
    """0 when every measurement and part ran; 3 (partial) when some failed; 1 when none is complete."""
    from leadflow.errors import EXIT_FAILED, EXIT_OK, EXIT_PARTIAL

    if not result.get("complete_measurements"):
        return EXIT_FAILED
    start = result.get("startup_to_first_request_s") or {}
    peer = result.get("peer") or {}
    if result.get("failures") or "error" in start or result.get("scoring_error") or "error" in peer \
            or peer.get("failures") or (peer and result.get("peer_cpu_ratio") is None):
        return EXIT_PARTIAL
    return EXIT_OK


def _main(argv: list[str] | None = None) -> None:
    import argparse
    import atexit

    parser = argparse.ArgumentParser(description="one leadflow bench measurement in this process (JSON on stdout)")
    parser.add_argument("--crm", choices=("hubspot", "salesforce"), required=True)
    parser.add_argument("--leads", type=int, required=True)
    parser.add_argument("--rate-limit")
    parser.add_argument("--changed", type=int, default=100)
    parser.add_argument("--random-seed", type=int, default=42)
    parser.add_argument("--profile", help="write a pyinstrument profile of the backfill here (HTML, and .txt)")
    parser.add_argument("--lookback", type=int, help="override settings.LOOKBACK_SECONDS (experiment)")
    parser.add_argument("--workdir", help="Prefect's home and the state DB (the caller removes it after this exits)")
    parser.add_argument("--result", help="write the result here after each phase")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (state DB, audit log)")
    parser.add_argument("--runs", default=",".join(RUNS), help="comma-separated runs (the backfill always runs)")
    parser.add_argument("--fail-at", choices=PHASES, help=argparse.SUPPRESS)  # tests: raise on entering PHASE
    args = parser.parse_args(argv)
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="leadflow-bench-"))
    if not args.workdir and not args.keep:
        import shutil

        # registered before Prefect's server starts, so it runs after the server's own atexit stop
        atexit.register(shutil.rmtree, workdir, True)
    if args.fail_at:
        _inject_failure(args.fail_at)
    result = measure(args.crm, args.leads, args.rate_limit, args.changed, args.random_seed, args.profile,
                     args.lookback, workdir, Path(args.result) if args.result else None,
                     parse_runs(args.runs))
    sys.stdout.write(json.dumps(result, default=str) + "\n")
    sys.stdout.flush()
    sys.exit(1 if result.get("error") else 0)


def parse_runs(text: str) -> tuple[str, ...]:
    """``backfill,no_change`` -> the runs in their order; the backfill always runs."""
    wanted = {part.strip() for part in text.split(",") if part.strip()}
    unknown = wanted - set(RUNS)
    if unknown:
        raise ValueError(f"--runs: unknown run(s) {', '.join(sorted(unknown))}; expected {', '.join(RUNS)}")
    return tuple(r for r in RUNS if r == "backfill" or r in wanted)


def _inject_failure(phase: str) -> None:
    """Make ``phase`` raise (how the tests check that a failed phase still yields the result)."""
    global _measure
    measured = _measure

    def failing(result: dict[str, Any], enter: Any, *args: Any) -> None:
        def enter_or_fail(name: str) -> None:
            enter(name)
            if name == phase:
                raise RuntimeError(f"failure injected at {name}")

        measured(result, enter_or_fail, *args)

    _measure = failing


if __name__ == "__main__":
    _main()
