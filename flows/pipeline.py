"""One page of leads through the pipeline: enrich → qualify → plan the diff → write → audit.

Plain Python, no Prefect: ``flows/sync.py`` wraps ``process_page`` in a task. Everything a page
needs travels in ``RunContext``; a page's result is a small ``PageResult`` of counts, so nothing big
crosses a Prefect task boundary.
"""

from __future__ import annotations

import csv
import logging
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from connectors import state
from connectors.base import CrmConnector, FieldChange, LeadUpdate, Page, Quarantined, TaskSpec, WriteResult
from connectors.outcomes import StageMove, record_stage_moves
from connectors.writeback import plan_update
from flows.audit import AuditEntry, AuditLog, redact_value
from flows.orgs import known_members
from flows.summary import Counts
from leadflow.canonical import Lead, LeadKind

log = logging.getLogger("leadflow.pipeline")

PREVIEW_COLUMNS = ["crm", "crm_id", "object", "object_id", "field", "old", "new", "stage", "reasons"]


class TaskCarry:
    """Next-step tasks held back between pages, so that task lookups and creates go out in full
    batches: a page sends its tasks and the held ones in whole batches and holds the rest for the
    next page; the run sends what is left at its end (``send_held_tasks``). A held task's lead stays
    pending (``in_progress``) until its task is created, so a run that stops first finishes it."""

    def __init__(self, batch: int):
        self.batch = max(1, batch)
        self._held: list[TaskSpec] = []
        self._lock = threading.Lock()

    @classmethod
    def for_connector(cls, connector: CrmConnector) -> TaskCarry:
        return cls(math.lcm(getattr(connector, "task_lookup_batch", 1), getattr(connector, "task_create_batch", 1)))

    def take(self, tasks: list[TaskSpec]) -> list[TaskSpec]:
        """The held tasks and ``tasks`` to send now, in whole batches; the rest is held."""
        with self._lock:
            pool = self._held + tasks
            cut = len(pool) - len(pool) % self.batch
            send, self._held = pool[:cut], pool[cut:]
        return send

    def drain(self) -> list[TaskSpec]:
        with self._lock:
            held, self._held = self._held, []
        return held


@dataclass
class RunContext:
    crm: str
    connector: CrmConnector
    engine: Engine
    model: Any  # scoring model
    waterfall: Any | None  # connectors.enrichment waterfall, or None to skip enrichment
    audit: AuditLog
    now: datetime
    dry_run: bool = False
    preview_path: Path | None = None
    task_stages: frozenset[str] = frozenset()
    task_carry: TaskCarry | None = None  # None: every page sends its own tasks (dry runs, tests)


@dataclass(kw_only=True)
class PageResult(Counts):
    cursor: datetime | None = None
    stages: list[tuple[str, str, str]] = field(default_factory=list)  # (stage, source, segment)
    examples: list[dict[str, Any]] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)


def process_page(ctx: RunContext, page: Page) -> PageResult:
    """Qualify and write back one page; a bad lead is quarantined and never blocks its page."""
    from scoring import apply_qualification, qualify_batch

    result = PageResult(read=len(page.leads) + len(page.quarantined), cursor=page.cursor)
    quarantined = {q.crm_id: q.reason for q in page.quarantined}
    leads, provenance = _enrich(ctx, page.leads)
    members = known_members(ctx.engine, ctx.crm, leads, remember=not ctx.dry_run)
    qualifications = qualify_batch(leads, ctx.now, ctx.model, members)
    written = state.written_values(ctx.engine, ctx.crm, [lead.crm_id for lead in leads])

    updates: list[LeadUpdate] = []
    tasks: list[TaskSpec] = []
    supersede: dict[str, list[str]] = {}
    by_id: dict[str, tuple[Lead, Any]] = {}
    for lead, q in zip(leads, qualifications):
        try:
            scored = apply_qualification(lead, q)
            lead_updates = plan_update(scored, page.current.get(lead.crm_id, {}), written.get(lead.crm_id, {}),
                                       ctx.connector.mapping)
        except (ValueError, TypeError) as exc:
            quarantined[lead.crm_id] = f"{ctx.crm}:{lead.crm_id}: {exc}"
            continue
        by_id[lead.crm_id] = (scored, q)
        updates.extend(u for u in lead_updates if u.fields)
        task = _task_for(ctx, scored, q)
        if task is not None:
            tasks.append(task)
        if q.stage_changed and q.previous_stage is not None:
            supersede[lead.crm_id] = [f"{lead.crm_id}:{q.previous_stage.value}:"]
        result.stages.append((q.stage.value, lead.source.value, q.segment))
        if q.stage_changed:
            result.stage_moves += 1

    changed_ids = {u.crm_id for u in updates}
    result.changed, result.unchanged = len(changed_ids), len(by_id) - len(changed_ids)
    tasks = _tasks_not_yet_created(ctx, tasks)
    if not ctx.dry_run:
        state.mark_in_progress(ctx.engine, ctx.crm, changed_ids | {t.crm_id for t in tasks} | set(supersede))
    send = ctx.task_carry.take(tasks) if ctx.task_carry is not None and not ctx.dry_run else tasks
    write = _write(ctx, updates, send, supersede)

    result.failed, result.failures = len(write.failed), dict(write.failed)
    result.quarantined = len(quarantined)
    result.tasks_created, result.tasks_closed = len(write.tasks_created), len(write.tasks_closed)
    held = {t.crm_id for t in tasks} - {t.crm_id for t in send}
    _record_state(ctx, page, updates, write, quarantined, keep_pending=held)
    _record_stage_moves(ctx, updates, write, by_id)
    _finish_carried(ctx, [t for t in send if t.crm_id not in by_id], write)
    _audit(ctx, updates, send, write, quarantined, by_id, provenance)
    result.examples = _examples(by_id, limit=len(EXAMPLE_ORDER))
    return result


def send_held_tasks(ctx: RunContext) -> PageResult:
    """The tasks ``TaskCarry`` still holds at the end of a run, sent in one go."""
    tasks = ctx.task_carry.drain() if ctx.task_carry is not None else []
    result = PageResult()
    if not tasks:
        return result
    write = _write(ctx, [], tasks, {})
    result.tasks_created = len(write.tasks_created)
    state.mark_pending(ctx.engine, ctx.crm, _task_failures_by_lead(write), kind="write_failed")
    _finish_carried(ctx, tasks, write)
    _audit(ctx, [], tasks, write, {}, {}, {})
    return result


def _finish_carried(ctx: RunContext, tasks: list[TaskSpec], write: WriteResult) -> None:
    """Leads of earlier pages whose held task is now in the CRM leave ``lf_pending_leads``."""
    if ctx.dry_run or not tasks:
        return
    done = {t.crm_id for t in tasks if t.key in write.tasks_created or t.key in write.tasks_existing}
    state.clear_pending(ctx.engine, ctx.crm, done - set(_task_failures_by_lead(write)))


def _enrich(ctx: RunContext, leads: list[Lead]) -> tuple[list[Lead], dict[str, dict[str, Any]]]:
    """The enriched leads, and for each lead the provenance of every field enrichment set."""
    if ctx.waterfall is None or not leads:
        return leads, {}
    outcomes = ctx.waterfall.enrich_batch(leads, ctx.now)
    return [o.lead for o in outcomes], {o.lead.crm_id: o.provenance for o in outcomes if o.provenance}


def _task_for(ctx: RunContext, lead: Lead, q: Any) -> TaskSpec | None:
    if q.stage.value not in ctx.task_stages or lead.manual_stage is not None:
        return None
    step = q.next_step
    return TaskSpec(
        key=f"{lead.crm_id}:{q.stage.value}:{step.id}",
        crm_id=lead.crm_id,
        stage=q.stage.value,
        subject=step.subject,
        body=step.body,
        due=step.due(ctx.now),
        priority=step.priority,
    )


def _tasks_not_yet_created(ctx: RunContext, tasks: list[TaskSpec]) -> list[TaskSpec]:
    if not tasks:
        return tasks
    known = state.created_task_keys(ctx.engine, ctx.crm, [t.key for t in tasks])
    return [t for t in tasks if t.key not in known]


def _write(ctx: RunContext, updates: list[LeadUpdate], tasks: list[TaskSpec],
           supersede: dict[str, list[str]]) -> WriteResult:
    if ctx.dry_run:
        _preview(ctx, updates, tasks)
        return WriteResult(succeeded=sorted({u.crm_id for u in updates}),
                           tasks_created={t.key: "(dry run)" for t in tasks})
    result = ctx.connector.write_updates(updates) if updates else WriteResult()
    tasks = [t for t in tasks if t.crm_id not in result.failed]
    supersede = {crm_id: refs for crm_id, refs in supersede.items() if crm_id not in result.failed}
    if tasks or supersede:
        task_result = ctx.connector.ensure_tasks(tasks, supersede)
        result.tasks_created.update(task_result.tasks_created)
        result.tasks_existing.update(task_result.tasks_existing)
        result.tasks_closed.extend(task_result.tasks_closed)
        result.task_failures.update(task_result.task_failures)
    return result


def _record_state(ctx: RunContext, page: Page, updates: list[LeadUpdate], write: WriteResult,
                  quarantined: dict[str, str], keep_pending: set[str] = frozenset()) -> None:
    """Written values, pending leads (failed writes, quarantined leads, failed tasks); the watermark
    is the flow's to move, in page order."""
    if ctx.dry_run:
        return
    page.quarantined = [Quarantined(crm_id, reason) for crm_id, reason in quarantined.items()]
    state.commit_page(ctx.engine, ctx.crm, ctx.connector.mapping.objects["lead"], page, updates, write,
                      advance=False, keep_pending=keep_pending)
    state.mark_pending(ctx.engine, ctx.crm, _task_failures_by_lead(write), kind="write_failed")


def _record_stage_moves(ctx: RunContext, updates: list[LeadUpdate], write: WriteResult,
                        by_id: dict[str, tuple[Lead, Any]]) -> None:
    """The stage writes that landed, appended to leadflow's stage history (connectors/outcomes.py)."""
    if ctx.dry_run:
        return
    moves = []
    for update in updates:
        if update.crm_id in write.failed or not any(c.canonical == "stage" for c in update.changes):
            continue
        _lead, q = by_id[update.crm_id]
        moves.append(StageMove(update.crm_id, q.stage.value, q.previous_stage.value if q.previous_stage else None))
    record_stage_moves(ctx.engine, ctx.crm, moves, ctx.now, getattr(ctx.audit, "run_id", None))


def _task_failures_by_lead(write: WriteResult) -> dict[str, str]:
    """crm_id -> reason, from task key -> reason (a key starts with its lead's id)."""
    return {key.split(":", 1)[0]: reason for key, reason in write.task_failures.items()}


def _audit(ctx: RunContext, updates: list[LeadUpdate], tasks: list[TaskSpec], write: WriteResult,
           quarantined: dict[str, str], by_id: dict[str, tuple[Lead, Any]],
           provenance: dict[str, dict[str, Any]]) -> None:
    entries: list[AuditEntry] = []
    for update in updates:
        lead, q = by_id[update.crm_id]
        patient = lead.lead_kind is LeadKind.patient
        reasons = None if patient else q.reasons
        if update.crm_id in write.failed:
            entries.append(AuditEntry(ctx.crm, update.crm_id, "write_failed", None, None,
                                      write.failed[update.crm_id], reasons))
            continue
        sources = provenance.get(update.crm_id, {})
        for change in update.changes:
            entries.extend(_change_entries(ctx.crm, change, patient, _why(change, sources, reasons)))
    for task in tasks:
        if task.key in write.tasks_created:
            entries.append(AuditEntry(ctx.crm, task.crm_id, "task_created", task.key, None,
                                      write.tasks_created[task.key]))
    for task_id in write.tasks_closed:
        entries.append(AuditEntry(ctx.crm, "-", "task_closed", None, None, task_id))
    for crm_id, reason in quarantined.items():
        entries.append(AuditEntry(ctx.crm, crm_id, "quarantined", None, None, reason))
    ctx.audit.record(entries)


def _why(change: FieldChange, sources: dict[str, Any], reasons: Sequence[str] | None) -> Sequence[str] | None:
    """An enriched field is explained by where its value came from; an output by the lead's reasons."""
    source = sources.get(change.canonical)
    if source is None:
        return reasons
    return [f"enriched by {source.provider} (confidence {source.confidence:.2f}, {source.source_key})"]


def _change_entries(crm: str, change: FieldChange, patient: bool, reasons: Sequence[str] | None) -> list[AuditEntry]:
    old = redact_value(change.canonical, change.old, patient)
    new = redact_value(change.canonical, change.new, patient)
    action = "stage_move" if change.canonical == "stage" else "field_set"
    return [AuditEntry(crm, change.crm_id, action, change.field, old, new, reasons)]


def _preview(ctx: RunContext, updates: list[LeadUpdate], tasks: list[TaskSpec]) -> None:
    if ctx.preview_path is None:
        return
    ctx.preview_path.parent.mkdir(parents=True, exist_ok=True)
    new_file = not ctx.preview_path.exists()
    with ctx.preview_path.open("a", newline="") as handle:
        writer = csv.writer(handle)
        if new_file:
            writer.writerow(PREVIEW_COLUMNS)
        for update in updates:
            for change in update.changes:
                writer.writerow([ctx.crm, update.crm_id, update.object, update.object_id, change.field,
                                 change.old, change.new, "", ""])
        for task in tasks:
            writer.writerow([ctx.crm, task.crm_id, "task", task.key, "subject", "", task.subject, task.stage, ""])


EXAMPLE_ORDER = ("sql", "mql", "sal", "intake_ready", "nurture", "disqualified", "redirect", "inquiry")


def _examples(by_id: dict[str, tuple[Lead, Any]], limit: int) -> list[dict[str, Any]]:
    """One B2B lead per stage, the most advanced stages first (patients are never shown)."""
    first_of_stage: dict[str, dict[str, Any]] = {}
    for lead, q in by_id.values():
        if lead.lead_kind is LeadKind.patient or q.stage.value in first_of_stage:
            continue
        first_of_stage[q.stage.value] = {
            "crm_id": lead.crm_id, "company": lead.company_name, "stage": q.stage.value,
            "lead_score": q.lead_score, "reasons": q.reasons[:3], "next_step": q.next_step.subject}
    return merge_examples([], list(first_of_stage.values()), limit)


def merge_examples(kept: list[dict[str, Any]], more: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """``kept`` plus ``more``, one per stage, ordered by EXAMPLE_ORDER, at most ``limit``."""
    by_stage = {e["stage"]: e for e in more}
    by_stage.update({e["stage"]: e for e in kept})
    ordered = sorted(by_stage.values(), key=lambda e: EXAMPLE_ORDER.index(e["stage"])
                     if e["stage"] in EXAMPLE_ORDER else len(EXAMPLE_ORDER))
    return ordered[:limit]
