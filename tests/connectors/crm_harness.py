"""Helpers for the sandbox tests: seeding, a stand-in qualification, and a minimal sync loop that
does what flows/pipeline.py does with the connector API (read, plan, write, tasks, state)."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from state import leads as state
from connectors.retry import RetryPolicy
from connectors.base import TaskSpec, WriteResult
from connectors.writeback import plan_update
from leadflow.canonical import Lead

NOW = datetime(2026, 11, 27, tzinfo=timezone.utc)


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


def seed_hubspot(sb: Any, n: int, *, start_ms: int | None = None, per_timestamp: int = 1,
                 with_company: bool = True, extra: dict[str, str] | None = None) -> list[str]:
    """``n`` contacts (``per_timestamp`` share each modification time), each with a company."""
    portal = sandbox_state(sb).hubspot
    start = start_ms if start_ms is not None else now_ms() - 3_600_000
    contacts, companies = [], []
    ids = []
    for i in range(n):
        cid = str(10_001 + len(portal.tables["contacts"]) + i)
        stamp = start + (i // per_timestamp)
        props = {"email": f"c{cid}@example.org", "firstname": "Pat", "lastname": f"L{cid}",
                 "jobtitle": "CIO", "lead_source": "Demo Request"}
        props.update(extra or {})
        contacts.append((cid, props, stamp, stamp))
        ids.append(cid)
        if with_company:
            coid = str(5_000_001 + len(portal.tables["companies"]) + i)
            companies.append((coid, {"name": f"Org {cid}", "domain": f"org{cid}.example"}, stamp, stamp))
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


def seed_salesforce(sb: Any, n: int, *, extra: dict[str, Any] | None = None) -> list[str]:
    org = sandbox_state(sb).salesforce
    ids = []
    for i in range(n):
        record = {"LastName": f"L{i}", "Company": f"Org {i}", "Email": f"l{i}@example.org", "Title": "CMO",
                  "LeadSource": "Web", "Status": "Open - Not Contacted"}
        record.update(extra or {})
        ids.append(org_create(org, "Lead", record))
    return ids


def org_create(org: Any, obj: str, record: dict[str, Any]) -> str:
    from sandbox.store import now_ms as sb_now

    record_id = org.next_id(obj)
    stamp = sb_now()
    org.tables[obj].insert(record_id, dict(record), stamp, stamp)
    return record_id


def _score(crm_id: str) -> int:
    return int(hashlib.sha1(crm_id.encode()).hexdigest(), 16) % 90 + 5


def qualify(lead: Lead, model_version: str = "test-1") -> tuple[Lead, TaskSpec | None]:
    """A deterministic stand-in for scoring: outputs depend on the lead's inputs only."""
    score = _score(lead.crm_id + (lead.job_title or ""))
    stage = "mql" if score >= 50 else "inquiry"
    scored = lead.model_copy(update={
        "fit_score": score, "engagement_score": 100 - score, "lead_score": score, "stage": stage,
        "reasons": [f"Title {lead.job_title}", "Demo requested"], "next_step": "Book discovery call",
        "model_version": model_version, "scored_at": NOW, "org_type": lead.org_type or "hospital",
    })
    task = None
    if stage == "mql":
        task = TaskSpec(key=f"{lead.crm_id}:mql:book_call", crm_id=lead.crm_id, stage="mql",
                        subject="Book discovery call", body="From leadflow", due=(NOW + timedelta(days=2)).date(),
                        priority="high")
    return scored, task


@dataclass
class RunOutcome:
    read: int = 0
    quarantined: int = 0
    written: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    tasks_created: int = 0
    tasks_existing: int = 0
    task_failures: dict[str, str] = field(default_factory=dict)
    ids: list[str] = field(default_factory=list)


def run_sync(conn: Any, engine: Any, *, lookback: int = 300, until: datetime | None = None,
             crash_after_tasks: bool = False, incremental: bool = True) -> RunOutcome:
    """One incremental run, as flows/sync.py does it."""
    out = RunOutcome()
    obj = conn.mapping.objects["lead"]
    pending = state.pending_ids(engine, conn.crm)
    pages = list(conn.fetch_by_ids(pending)) if pending else []
    since = state.read_since(engine, conn.crm, obj, lookback) if incremental else None
    until = until or datetime.now(timezone.utc)
    for page in [*pages, *conn.iter_pages(since, until)]:
        out.read += len(page.leads)
        out.quarantined += len(page.quarantined)
        out.ids.extend(lead.crm_id for lead in page.leads)
        written = state.written_values(engine, conn.crm, [lead.crm_id for lead in page.leads])
        updates, tasks = [], []
        for lead in page.leads:
            scored, task = qualify(lead)
            updates.extend(plan_update(scored, page.current.get(lead.crm_id, {}), written.get(lead.crm_id, {}),
                                       conn.mapping))
            if task:
                tasks.append(task)
        result = conn.write_updates(updates) if updates else WriteResult()
        out.written += len({u.crm_id for u in updates}) - len(result.failed)
        out.failed.update(result.failed)
        tasks = [t for t in tasks if t.crm_id not in result.failed]
        if tasks:
            task_result = conn.ensure_tasks(tasks, {})
            out.tasks_created += len(task_result.tasks_created)
            out.tasks_existing += len(task_result.tasks_existing)
            out.task_failures.update(task_result.task_failures)
            if crash_after_tasks:
                raise RuntimeError("simulated crash after task creation, before any state is saved")
        state.record_written(engine, conn.crm, [u for u in updates if u.crm_id not in result.failed])
        state.mark_pending(engine, conn.crm, result.failed, kind="write_failed")
        state.mark_pending(engine, conn.crm, {q.crm_id: q.reason for q in page.quarantined}, kind="quarantined")
        state.clear_pending(engine, conn.crm, [lead.crm_id for lead in page.leads if lead.crm_id not in result.failed])
    if incremental:
        state.set_watermark(engine, conn.crm, obj, until)
    return out


def calls(sb: Any, prefix: str) -> dict[str, int]:
    snap = sb.stats()
    out = {}
    for name, counts in (snap.get("endpoints") or {}).items():
        if name.startswith(prefix):
            out[name] = sum(v for v in counts.values() if isinstance(v, int))
    return out
