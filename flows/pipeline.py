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

from state import leads as state
from connectors.crm.base import CrmConnector, FieldChange, LeadUpdate, Page, Quarantined, TaskSpec, WriteResult
from connectors.crm.convert import values_equal
from connectors.crm.writeback import STAMP_FIELDS, plan_update
from state.audit import AuditEntry, AuditLog
from state.orgs import known_members
from state.outcomes import StageMove, record_lead_facts, record_stage_moves
from flows.summary import Counts
from leadflow.canonical import Lead, LeadKind
from leadflow.redaction import REDACTED, shown_value
from mappings import NATIVE_STAGE, CrmMapping, FieldMapping
from connectors.enrichment.waterfall import Waterfall
from scoring.model import QualificationModel
from scoring.tasks import TASK_STAGES, lead_of_task_key, next_task, superseded_prefixes

log = logging.getLogger("leadflow.pipeline")

PREVIEW_COLUMNS = ["crm", "crm_id", "name", "email", "company", "stage_before", "stage_after", "fit_score",
                   "engagement_score", "lead_score", "reasons", "changes", "task"]
CHANGE_SEPARATOR = " | "  # between the changes of one preview row (reasons hold "; ")
PREVIEW_ROWS_PER_PAGE = 200  # rows a page adds to the run's preview artifact (the CSV has them all)


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
        """The held tasks and ``tasks`` to send now, in whole batches; the rest is held. A key
        already held is held once."""
        with self._lock:
            pool = list({t.key: t for t in self._held + tasks}.values())
            cut = len(pool) - len(pool) % self.batch
            send, self._held = pool[:cut], pool[cut:]
        return send

    def discard(self, crm_ids: set[str]) -> None:
        """Forget the held tasks of these leads (their field write failed: both are retried next run)."""
        with self._lock:
            self._held = [t for t in self._held if t.crm_id not in crm_ids]

    def drain(self) -> list[TaskSpec]:
        with self._lock:
            held, self._held = self._held, []
        return held


@dataclass
class RunContext:
    crm: str
    connector: CrmConnector
    engine: Engine
    model: QualificationModel
    waterfall: Waterfall | None  # None: no enrichment
    audit: AuditLog
    now: datetime
    dry_run: bool = False
    preview_path: Path | None = None
    task_stages: frozenset[str] = TASK_STAGES
    task_carry: TaskCarry | None = None  # None: every page sends its own tasks (dry runs, tests)
    # crm_id -> modification time of the version this run processed: a lead is processed once per
    # run (one retried by id comes back in the window read too; see _not_yet_handled)
    handled: dict[str, datetime | None] = field(default_factory=dict)


@dataclass(kw_only=True)
class PageResult(Counts):
    cursor: datetime | None = None
    stages: list[tuple[str, str, str]] = field(default_factory=list)  # (stage, source, segment)
    examples: list[dict[str, Any]] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    rejected: list[Rejected] = field(default_factory=list)
    kept_manual: int = 0
    preview: list[dict[str, Any]] = field(default_factory=list)  # dry runs: the first rows of the preview


def process_page(ctx: RunContext, page: Page) -> PageResult:
    """Qualify and write back one page; a bad lead is quarantined and never blocks its page.

    Order, so that no CRM change lacks its audit row and no lead is forgotten whatever the moment
    the process dies: plan → read back the fields a person may change and drop what moved →
    mark the leads in progress → audit the intended changes → write → audit the outcome → bookkeeping.
    """
    from scoring import apply_qualification, qualify_batch

    page_leads = _not_yet_handled(ctx, page.leads)
    result = PageResult(read=len(page_leads) + len(page.quarantined), cursor=page.cursor)
    quarantined = {q.crm_id: q.reason for q in page.quarantined}
    leads, provenance = _enrich(ctx, page_leads)
    members = known_members(ctx.engine, ctx.crm, leads, remember=not ctx.dry_run)
    qualifications = qualify_batch(leads, ctx.now, ctx.model, members)
    written = state.written_values(ctx.engine, ctx.crm, [lead.crm_id for lead in leads])

    plan = _Plan()
    for lead, q in zip(leads, qualifications):
        try:
            scored = apply_qualification(lead, q)
            lead_updates = plan_update(scored, page.current.get(lead.crm_id, {}), written.get(lead.crm_id, {}),
                                       ctx.connector.mapping)
        except (ValueError, TypeError) as exc:
            quarantined[lead.crm_id] = f"{ctx.crm}:{lead.crm_id}: {exc}"
            continue
        plan.add(ctx, scored, q, lead_updates)
        result.stages.append((q.stage.value, lead.source.value, q.segment))
        if q.stage_changed:
            result.stage_moves += 1
    if not ctx.dry_run:
        kept = _keep_edits_made_since_read(ctx, page, plan)
        result.kept_manual = len(kept)
    else:
        kept = []
    for lead in page_leads:
        ctx.handled[lead.crm_id] = lead.modified_at

    changed_ids = {u.crm_id for u in plan.updates}
    result.changed, result.unchanged = len(changed_ids), len(plan.by_id) - len(changed_ids)
    tasks = _tasks_not_yet_created(ctx, plan.tasks)
    if not ctx.dry_run:
        state.mark_in_progress(ctx.engine, ctx.crm, changed_ids | {t.crm_id for t in tasks} | set(plan.supersede))
    send = ctx.task_carry.take(tasks) if ctx.task_carry is not None and not ctx.dry_run else tasks
    _audit_intent(ctx, plan.updates, send, plan.supersede, plan.by_id, provenance, kept)
    if ctx.dry_run:
        write = _dry_write(ctx, plan, send)
        result.preview = _preview_rows(ctx, plan, send, write)[:PREVIEW_ROWS_PER_PAGE]
    else:
        write = _write(ctx, plan.updates, send, plan.supersede)
    if ctx.task_carry is not None and write.failed:
        ctx.task_carry.discard(set(write.failed))  # a lead whose fields failed gets its task with them, next run

    result.failed, result.failures = len(write.failed), dict(write.failed)
    result.quarantined = len(quarantined)
    result.tasks_created, result.tasks_closed = len(write.tasks_created), len(write.tasks_closed)
    result.rejected = ([Rejected(i, "write_failed", r) for i, r in write.failed.items()]
                       + [Rejected(i, "task_failed", r) for i, r in _task_failures_by_lead(write).items()]
                       + [Rejected(i, "quarantined", r) for i, r in quarantined.items()])
    held = {t.crm_id for t in tasks} - {t.crm_id for t in send}
    _audit_outcome(ctx, plan.updates, send, write, quarantined)
    _record_state(ctx, page, plan.updates, write, quarantined, keep_pending=held)
    _record_stage_moves(ctx, plan.updates, write, plan.by_id)
    _record_facts(ctx, plan.by_id)
    _finish_carried(ctx, [t for t in send if t.crm_id not in plan.by_id], write)
    result.examples = _examples(plan.by_id, limit=len(EXAMPLE_ORDER))
    return result


@dataclass(frozen=True)
class Rejected:
    """A lead a run could not write or read, with the reason (which never holds a value)."""

    crm_id: str
    kind: str  # write_failed | task_failed | quarantined
    reason: str


@dataclass
class _Plan:
    """What one page would change: field updates, next-step tasks and the tasks they supersede."""

    updates: list[LeadUpdate] = field(default_factory=list)
    tasks: list[TaskSpec] = field(default_factory=list)
    supersede: dict[str, list[str]] = field(default_factory=dict)
    by_id: dict[str, tuple[Lead, Any]] = field(default_factory=dict)

    def add(self, ctx: RunContext, lead: Lead, q: Any, updates: list[LeadUpdate]) -> None:
        self.by_id[lead.crm_id] = (lead, q)
        self.updates.extend(u for u in updates if u.fields)
        task = _task_for(ctx, lead, q)
        if task is not None:
            self.tasks.append(task)
        replaced = superseded_prefixes(lead.crm_id, q.previous_stage.value if q.previous_stage else None,
                                       q.stage_changed)
        if replaced:
            self.supersede[lead.crm_id] = replaced

    def drop_stage_work(self, crm_ids: set[str]) -> None:
        """No task and no superseding for leads whose stage a person changed during the run."""
        self.tasks = [t for t in self.tasks if t.crm_id not in crm_ids]
        for crm_id in crm_ids:
            self.supersede.pop(crm_id, None)


def _not_yet_handled(ctx: RunContext, leads: list[Lead]) -> list[Lead]:
    """Leads of a page, less those this run already processed (a lead retried by id comes back in
    the window read, often in the version leadflow's own write made). A skipped lead's read mark
    goes back to the version this run processed, so a change made since (a person's, after
    leadflow's write) is read by the next run rather than taken as handled."""
    if not ctx.handled:
        return leads
    fresh = [lead for lead in leads if lead.crm_id not in ctx.handled]
    if len(fresh) < len(leads) and not ctx.dry_run:
        state.mark_seen(ctx.engine, ctx.crm, {lead.crm_id: ctx.handled[lead.crm_id] for lead in leads
                                             if lead.crm_id in ctx.handled})
    return fresh


def send_held_tasks(ctx: RunContext) -> PageResult:
    """The tasks ``TaskCarry`` still holds at the end of a run, sent in one go."""
    tasks = ctx.task_carry.drain() if ctx.task_carry is not None else []
    result = PageResult()
    if not tasks:
        return result
    _audit_intent(ctx, [], tasks, {}, {}, {}, [])
    write = _write(ctx, [], tasks, {})
    result.tasks_created = len(write.tasks_created)
    failures = _task_failures_by_lead(write)
    result.rejected = [Rejected(i, "task_failed", r) for i, r in failures.items()]
    _audit_outcome(ctx, [], tasks, write, {})
    state.mark_pending(ctx.engine, ctx.crm, failures, kind="write_failed")
    _finish_carried(ctx, tasks, write)
    return result


def _finish_carried(ctx: RunContext, tasks: list[TaskSpec], write: WriteResult) -> None:
    """Leads of earlier pages whose held task is now in the CRM leave ``lf_pending_leads`` - only
    when they were merely in progress: a lead whose field write failed stays pending."""
    if ctx.dry_run or not tasks:
        return
    done = {t.crm_id for t in tasks if t.key in write.tasks_created or t.key in write.tasks_existing}
    state.clear_pending(ctx.engine, ctx.crm, done - set(_task_failures_by_lead(write)), kind="in_progress")


def _enrich(ctx: RunContext, leads: list[Lead]) -> tuple[list[Lead], dict[str, dict[str, Any]]]:
    """The enriched leads, and for each lead the provenance of every field enrichment set."""
    if ctx.waterfall is None or not leads:
        return leads, {}
    outcomes = ctx.waterfall.enrich_batch(leads, ctx.now)
    return [o.lead for o in outcomes], {o.lead.crm_id: o.provenance for o in outcomes if o.provenance}


def _task_for(ctx: RunContext, lead: Lead, q: Any) -> TaskSpec | None:
    manual = lead.manual_stage.value if lead.manual_stage is not None else None
    return next_task(lead.crm_id, q.stage.value, manual, q.next_step, ctx.now, ctx.task_stages)


def _tasks_not_yet_created(ctx: RunContext, tasks: list[TaskSpec]) -> list[TaskSpec]:
    if not tasks:
        return tasks
    known = state.created_task_keys(ctx.engine, ctx.crm, [t.key for t in tasks])
    return [t for t in tasks if t.key not in known]


# --------------------------------------------------------------------------- compare before write


def _guarded_fields(mapping: CrmMapping) -> dict[str, FieldMapping]:
    """Canonical name -> mapping of every written field a person may own: ``if_blank`` and
    ``never_over_manual`` fields (the stage and the next step among them)."""
    return {name: fm for name, fm in mapping.writable().items() if fm.policy != "always"}


def _keep_edits_made_since_read(ctx: RunContext, page: Page, plan: _Plan) -> list[tuple[FieldChange, Any]]:
    """Just before the write, read back the person-owned fields the plan would change (one batch
    read per CRM batch) and drop every change whose CRM value moved since the page was read: a
    rep's edit made while the run was in flight is never overwritten. Returns the dropped
    changes with the value the person set."""
    mapping = ctx.connector.mapping
    guarded = _guarded_fields(mapping)
    wanted: dict[str, dict[str, set[str]]] = {}  # object -> object id -> CRM fields
    for update in plan.updates:
        for change in update.changes:
            if change.canonical in guarded:
                wanted.setdefault(update.object, {}).setdefault(update.object_id, set()).add(guarded[change.canonical].field)
    if not wanted:
        return []
    now_values = {obj: ctx.connector.read_current(obj, sorted(ids), sorted(set().union(*ids.values())))
                  for obj, ids in wanted.items()}
    dropped: list[tuple[FieldChange, Any]] = []
    kept_updates: list[LeadUpdate] = []
    stage_edited: set[str] = set()
    for update in plan.updates:
        current_now = now_values.get(update.object, {}).get(update.object_id)
        at_read = page.current.get(update.crm_id, {})
        keep: list[FieldChange] = []
        for change in update.changes:
            fm = guarded.get(change.canonical)
            if fm is not None and current_now is not None and fm.field in current_now and change.field in at_read \
                    and not values_equal(fm, current_now[fm.field], at_read[change.field]):
                if not any(c.crm_id == change.crm_id and c.field == change.field for c, _ in dropped):
                    dropped.append((change, current_now[fm.field]))  # a backward move's clear and set: one row
                if change.canonical == "stage":
                    stage_edited.add(update.crm_id)
                continue
            keep.append(change)
        if len(keep) == len(update.changes):
            kept_updates.append(update)
        elif any(c.canonical not in STAMP_FIELDS for c in keep):
            writable = mapping.writable()
            fields = {writable[c.canonical].field: update.fields[writable[c.canonical].field] for c in keep}
            clear_first = [name for name in update.clear_first if name in fields]
            kept_updates.append(LeadUpdate(update.crm_id, update.object, update.object_id, fields, keep, clear_first))
    plan.updates = kept_updates
    plan.drop_stage_work(stage_edited)
    if dropped:
        log.info("%s: %d change(s) not written: a person changed the field while the run was in flight",
                 ctx.crm, len(dropped))
    return dropped


# --------------------------------------------------------------------------- write


def _dry_write(ctx: RunContext, plan: _Plan, tasks: list[TaskSpec]) -> WriteResult:
    """What the real run would answer, without writing: tasks whose key the CRM already holds are
    found, as the real run's upsert would find them; the preview CSV gets a row per lead."""
    existing = ctx.connector.find_tasks([t.key for t in tasks]) if tasks else {}
    result = WriteResult(succeeded=sorted({u.crm_id for u in plan.updates}),
                         tasks_created={t.key: "(dry run)" for t in tasks if t.key not in existing},
                         tasks_existing={t.key: existing[t.key] for t in tasks if t.key in existing})
    _write_preview(ctx, _preview_rows(ctx, plan, tasks, result))
    return result


def _write(ctx: RunContext, updates: list[LeadUpdate], tasks: list[TaskSpec],
           supersede: dict[str, list[str]]) -> WriteResult:
    _still_holds_the_lock(ctx)
    result = ctx.connector.write_updates(updates) if updates else WriteResult()
    tasks = [t for t in tasks if t.crm_id not in result.failed]
    supersede = {crm_id: refs for crm_id, refs in supersede.items() if crm_id not in result.failed}
    if tasks or supersede:
        _still_holds_the_lock(ctx)
        task_result = ctx.connector.ensure_tasks(tasks, supersede)
        result.tasks_created.update(task_result.tasks_created)
        result.tasks_existing.update(task_result.tasks_existing)
        result.tasks_closed.extend(task_result.tasks_closed)
        result.closed_for.update(task_result.closed_for)
        result.task_failures.update(task_result.task_failures)
    return result


def _still_holds_the_lock(ctx: RunContext) -> None:
    """Before each CRM write: raises ``LockLost`` when another run took this run's lock over."""
    if ctx.audit.guard is not None:
        ctx.audit.guard()


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
    """The stage writes that landed, appended to leadflow's stage history (state/outcomes.py)."""
    if ctx.dry_run:
        return
    moves = []
    for update in updates:
        if update.crm_id in write.failed or not any(c.canonical == "stage" for c in update.changes):
            continue
        _lead, q = by_id[update.crm_id]
        moves.append(StageMove(update.crm_id, q.stage.value, q.previous_stage.value if q.previous_stage else None))
    record_stage_moves(ctx.engine, ctx.crm, moves, ctx.now, getattr(ctx.audit, "run_id", None))


def _record_facts(ctx: RunContext, by_id: dict[str, tuple[Lead, Any]]) -> None:
    """What each lead was qualified on, for the feedback report (scoring/feedback.py)."""
    from scoring.feedback import lead_facts

    if not ctx.dry_run:
        record_lead_facts(ctx.engine, ctx.crm, [lead_facts(lead, q, ctx.model) for lead, q in by_id.values()])


def _task_failures_by_lead(write: WriteResult) -> dict[str, str]:
    """crm_id -> reason, from task key -> reason."""
    return {lead_of_task_key(key): reason for key, reason in write.task_failures.items()}


# --------------------------------------------------------------------------- audit


def _audit_intent(ctx: RunContext, updates: list[LeadUpdate], tasks: list[TaskSpec],
                  supersede: dict[str, list[str]], by_id: dict[str, tuple[Lead, Any]],
                  provenance: dict[str, dict[str, Any]], kept: list[tuple[FieldChange, Any]]) -> None:
    """The changes about to be written, recorded before the write: a process that dies during the
    write leaves its changes audited (their outcome row missing; the next run re-reads the leads)."""
    entries: list[AuditEntry] = []
    for update in updates:
        lead, q = by_id[update.crm_id]
        patient = lead.lead_kind is LeadKind.patient
        reasons = None if patient else q.reasons
        sources = provenance.get(update.crm_id, {})
        for change in update.changes:
            entries.extend(_change_entries(ctx.crm, change, patient, _why(change, sources, reasons)))
    for task in tasks:
        entries.append(AuditEntry(ctx.crm, task.crm_id, "task_requested", task.key, None, task.stage))
    for crm_id, refs in supersede.items():
        for ref in refs:
            entries.append(AuditEntry(ctx.crm, crm_id, "task_close_requested", ref))
    for change, person_value in kept:
        lead, _q = by_id[change.crm_id]
        patient = lead.lead_kind is LeadKind.patient
        entries.append(AuditEntry(ctx.crm, change.crm_id, "kept_manual_edit", change.field,
                                  shown_value(change.canonical, change.old, patient),
                                  shown_value(change.canonical, person_value, patient),
                                  ["changed in the CRM while the run was in flight; leadflow did not overwrite it"]))
    ctx.audit.record(entries)


def _audit_outcome(ctx: RunContext, updates: list[LeadUpdate], tasks: list[TaskSpec], write: WriteResult,
                   quarantined: dict[str, str]) -> None:
    """What the CRM answered: per lead ``write_applied`` (naming the sync marker value written with its
    fields, where the connector writes one) or ``write_failed``, per task
    ``task_created`` / ``task_found`` / ``task_failed``, per closed task ``task_closed``."""
    if ctx.dry_run:
        entries = [AuditEntry(ctx.crm, crm_id, "quarantined", None, None, reason)
                   for crm_id, reason in quarantined.items()]
        ctx.audit.record(entries)
        return
    entries: list[AuditEntry] = []
    for crm_id in sorted({u.crm_id for u in updates}):
        if crm_id in write.failed:
            entries.append(AuditEntry(ctx.crm, crm_id, "write_failed", None, None, write.failed[crm_id]))
        else:
            marker, stamp = write.markers.get(crm_id, (None, None))
            entries.append(AuditEntry(ctx.crm, crm_id, "write_applied", marker, None, stamp))
    for task in {t.key: t for t in tasks}.values():
        if task.key in write.tasks_created:
            entries.append(AuditEntry(ctx.crm, task.crm_id, "task_created", task.key, None,
                                      write.tasks_created[task.key]))
        elif task.key in write.tasks_existing:
            entries.append(AuditEntry(ctx.crm, task.crm_id, "task_found", task.key, None,
                                      write.tasks_existing[task.key]))
        elif task.key in write.task_failures:
            entries.append(AuditEntry(ctx.crm, task.crm_id, "task_failed", task.key, None,
                                      write.task_failures[task.key]))
    for task_id in write.tasks_closed:
        entries.append(AuditEntry(ctx.crm, write.closed_for.get(task_id, "-"), "task_closed", None, None, task_id))
    for crm_id, reason in quarantined.items():
        entries.append(AuditEntry(ctx.crm, crm_id, "quarantined", None, None, reason))
    ctx.audit.record(entries)


def _why(change: FieldChange, sources: dict[str, Any], reasons: Sequence[str] | None) -> Sequence[str] | None:
    """An enriched field is explained by where its value came from; an output by the lead's reasons."""
    source = sources.get(change.canonical)
    if source is None:
        return reasons
    return [f"enriched by {source.provider} (confidence {source.confidence:.2f}, {source.source_key})"]


NATIVE_CLEAR_REASON = ("step 1 of 2 of a backward move: the CRM keeps a later stage in this field unless it is "
                       "cleared first; the clear and the set are sent as separate batches")


def _change_entries(crm: str, change: FieldChange, patient: bool, reasons: Sequence[str] | None) -> list[AuditEntry]:
    old = shown_value(change.canonical, change.old, patient)
    new = shown_value(change.canonical, change.new, patient)
    if change.canonical == NATIVE_STAGE:
        if change.new is None:
            return [AuditEntry(crm, change.crm_id, "native_stage_clear", change.field, old, None, [NATIVE_CLEAR_REASON])]
        return [AuditEntry(crm, change.crm_id, "native_stage_move", change.field, old, new, reasons)]
    action = "stage_move" if change.canonical == "stage" else "field_set"
    return [AuditEntry(crm, change.crm_id, action, change.field, old, new, reasons)]


def _preview_rows(ctx: RunContext, plan: _Plan, tasks: list[TaskSpec], write: WriteResult) -> list[dict[str, Any]]:
    """One row per lead the run would change or task: who, stage before -> after, scores, reasons,
    the fields that change (old -> new) and the task it would create. Patient leads show no name,
    email, company or free text."""
    changes: dict[str, list[FieldChange]] = {}
    for update in plan.updates:
        changes.setdefault(update.crm_id, []).extend(update.changes)
    new_tasks = {t.crm_id: t for t in tasks if t.key in write.tasks_created}
    rows = []
    for crm_id, (lead, q) in plan.by_id.items():
        if crm_id not in changes and crm_id not in new_tasks:
            continue
        patient = lead.lead_kind is LeadKind.patient
        task = new_tasks.get(crm_id)
        rows.append({
            "crm": ctx.crm, "crm_id": crm_id,
            "name": "" if patient else " ".join(p for p in (lead.first_name, lead.last_name) if p),
            "email": "" if patient else lead.email or "",
            "company": "" if patient else lead.company_name or "",
            "stage_before": q.previous_stage.value if q.previous_stage else "",
            "stage_after": q.stage.value,
            "fit_score": q.fit_score, "engagement_score": q.engagement_score, "lead_score": q.lead_score,
            "reasons": REDACTED if patient else "; ".join(q.reasons),
            "changes": CHANGE_SEPARATOR.join(f"{c.field}: {_shown(c, c.old, patient)} -> {_shown(c, c.new, patient)}"
                                 for c in changes.get(crm_id, [])),
            "task": f"{task.subject} [{task.key}]" if task and not patient else (task.key if task else ""),
        })
    return rows


def _shown(change: FieldChange, value: Any, patient: bool) -> str:
    shown = shown_value(change.canonical, value, patient)
    return "(blank)" if shown in (None, "") else str(shown)


def _write_preview(ctx: RunContext, rows: list[dict[str, Any]]) -> None:
    if ctx.preview_path is None or not rows:
        return
    ctx.preview_path.parent.mkdir(parents=True, exist_ok=True)
    new_file = not ctx.preview_path.exists()
    with _PREVIEW_LOCK, ctx.preview_path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=PREVIEW_COLUMNS)
        if new_file:
            writer.writeheader()
        writer.writerows(rows)


_PREVIEW_LOCK = threading.Lock()


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
