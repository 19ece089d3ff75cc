"""Helpers for the sandbox tests: seeding, and ``run_sync``, which runs the real pipeline
(flows/sync.py's run body and flows/pipeline.py, with the real scoring model) for a connector the
test built itself (its own retry policy, meter, mapping or faults)."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from connectors.retry import RetryPolicy
from flows.summary import RunSummary
from state.audit import read_audit


def fast_retry(**kw: Any) -> RetryPolicy:
    """A retry policy that does not sleep, for tests."""
    kw.setdefault("sleep", lambda s: None)
    kw.setdefault("jitter", False)
    return RetryPolicy(**kw)


def sandbox_state(sb: Any) -> Any:
    """The Sandbox object (portal + org) behind a running sandbox."""
    for name in ("state", "sandbox"):
        obj = getattr(sb, name, None)
        if obj is not None and hasattr(obj, "hubspot"):
            return obj
    return sb


def now_ms() -> int:
    return int(time.time() * 1000)


DAY_MS = 86_400_000


def seed_hubspot(sb: Any, n: int, *, start_ms: int | None = None, per_timestamp: int = 1,
                 with_company: bool = True, extra: dict[str, str] | None = None,
                 company_extra: dict[str, str] | None = None, engaged: int = 0) -> list[str]:
    """``n`` contacts (``per_timestamp`` share each modification time), each with a company; the
    first ``engaged`` asked for a demo yesterday (a form conversion HubSpot records on the contact)."""
    portal = sandbox_state(sb).hubspot
    start = start_ms if start_ms is not None else now_ms() - 3_600_000
    contacts, companies = [], []
    ids = []
    for i in range(n):
        cid = str(10_001 + len(portal.tables["contacts"]) + i)
        stamp = start + (i // per_timestamp)
        props = {"email": f"c{cid}@example.org", "firstname": "Pat", "lastname": f"L{cid}",
                 "jobtitle": "CIO", "lead_source": "Demo Request"}
        if i < engaged:
            props.update(recent_conversion_date=str(now_ms() - DAY_MS), recent_conversion_event_name="Demo request")
        props.update(extra or {})
        contacts.append((cid, props, stamp, stamp))
        ids.append(cid)
        if with_company:
            coid = str(5_000_001 + len(portal.tables["companies"]) + i)
            companies.append((coid, {"name": f"Org {cid}", "domain": f"org{cid}.example", **(company_extra or {})},
                              stamp, stamp))
    portal.tables["contacts"].bulk_load(contacts)
    if with_company:
        portal.tables["companies"].bulk_load(companies)
        for (cid, *_), (coid, *_) in zip(contacts, companies):
            portal.associate("contacts", cid, "companies", coid)
    portal.reserve_ids_after("contacts")
    portal.reserve_ids_after("companies")
    return ids


def touch_hubspot(sb: Any, ids: list[str], props: dict[str, str]) -> None:
    portal = sandbox_state(sb).hubspot
    for cid in ids:
        portal.write("contacts", cid, props)


def seed_salesforce(sb: Any, n: int, *, extra: dict[str, Any] | None = None, engaged: int = 0) -> list[str]:
    """``n`` leads; the first ``engaged`` had a meeting two days ago (an Event, as Salesforce keeps it)."""
    from datetime import date

    org = sandbox_state(sb).salesforce
    ids = []
    for i in range(n):
        record = {"LastName": f"L{i}", "Company": f"Org {i}", "Email": f"l{i}@example.org", "Title": "CMO",
                  "LeadSource": "Web", "Status": "Open - Not Contacted"}
        if i < engaged:
            record["LastActivityDate"] = date.today().isoformat()
        record.update(extra or {})
        ids.append(org_create(org, "Lead", record))
        if i < engaged:
            held = now_ms() - 2 * DAY_MS
            org_create(org, "Event", {"WhoId": ids[-1], "Subject": "Intro", "StartDateTime": held,
                                      "EndDateTime": held + 1_800_000})
    return ids


def org_create(org: Any, obj: str, record: dict[str, Any]) -> str:
    from sandbox.store import now_ms as sb_now

    record_id = org.next_id(obj)
    stamp = sb_now()
    org.tables[obj].insert(record_id, dict(record), stamp, stamp)
    return record_id


@dataclass
class RunOutcome:
    """What one run of the real pipeline did, in the terms the connector tests ask about: the run's
    summary, the leads it processed, and what its audit rows say landed."""

    summary: RunSummary
    ids: list[str]  # the leads the pipeline processed, in order (RunContext.handled)
    written: int  # leads whose field writes landed (audit: write_applied)
    failed: dict[str, str]  # crm_id -> reason: field writes the CRM refused
    tasks_existing: int  # tasks found in the CRM under their key (audit: task_found)
    task_failures: dict[str, str]  # crm_id -> reason: tasks that could not be made
    stages: dict[str, Any]  # crm_id -> the stage the run wrote, as audited (stage_move rows)

    @property
    def read(self) -> int:
        return self.summary.read

    @property
    def quarantined(self) -> int:
        return self.summary.quarantined

    @property
    def tasks_created(self) -> int:
        return self.summary.tasks_created


def run_sync(conn: Any, engine: Any, *, incremental: bool = True, crash_after_tasks: bool = False,
             waterfall: Any | None = None) -> RunOutcome:
    """One run of the real pipeline (``flows.sync.run_context`` with plain calls, no Prefect) for a
    connector the test built: an incremental sync from the watermark (``incremental``), or a full
    rerun of every lead, as ``rescore`` runs (no watermark move). Enrichment is off unless a
    ``waterfall`` is given (``sandbox_waterfall``).

    ``crash_after_tasks``: the process dies right after the first task upsert returns, before the
    pipeline's bookkeeping (a wrapper on the connector's ``ensure_tasks``)."""
    from flows.sync import PLAIN_CALLS, context_for, run_context

    flow = "sync_leads" if incremental else "rescore"
    run_id = f"test-{uuid.uuid4().hex[:12]}"
    ctx = context_for(conn, engine, flow, run_id, waterfall=waterfall)
    summary = RunSummary(crm=conn.crm, flow=flow, run_id=run_id)
    with _crashing_after_tasks(conn) if crash_after_tasks else contextlib.nullcontext():
        run_context(ctx, summary, None, None, limit=None, incremental=incremental, runner=PLAIN_CALLS)
    return _outcome(ctx, summary)


def sandbox_waterfall(sb: Any, engine: Any) -> Any:
    """The house enrichment waterfall (connectors/enrichment/enrichment.yaml) with NPPES at the sandbox's."""
    from connectors.enrichment.waterfall import build_waterfall

    return build_waterfall(engine=engine, nppes_url=sb.nppes_url)


@contextlib.contextmanager
def _crashing_after_tasks(conn: Any) -> Iterator[None]:
    """While the block runs, ``conn.ensure_tasks`` raises once the CRM has answered its call."""
    ensure = conn.ensure_tasks

    def ensure_then_crash(tasks: Any, supersede: Any) -> Any:
        ensure(tasks, supersede)
        raise RuntimeError("simulated crash after task creation, before any state is saved")

    conn.ensure_tasks = ensure_then_crash
    try:
        yield
    finally:
        del conn.ensure_tasks


def _outcome(ctx: Any, summary: RunSummary) -> RunOutcome:
    rows = read_audit(ctx.engine, run_id=summary.run_id, limit=1_000_000)
    actions = Counter(row["action"] for row in rows)
    rejected = {kind: {r["crm_id"]: r["reason"] for r in summary.rejected if r["kind"] == kind}
                for kind in ("write_failed", "task_failed")}
    return RunOutcome(summary=summary, ids=list(ctx.handled), written=actions["write_applied"],
                      failed=rejected["write_failed"], tasks_existing=actions["task_found"],
                      task_failures=rejected["task_failed"],
                      stages={row["crm_id"]: row["new_value"] for row in rows if row["action"] == "stage_move"})


def calls(sb: Any, prefix: str) -> dict[str, int]:
    snap = sb.stats()
    out = {}
    for name, counts in (snap.get("endpoints") or {}).items():
        if name.startswith(prefix):
            out[name] = sum(v for v in counts.values() if isinstance(v, int))
    return out
