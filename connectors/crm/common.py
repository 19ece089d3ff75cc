"""What the HubSpot and Salesforce connectors share: the call gate (limiter, budget, retries,
accounting), the skip-what-is-unchanged filter on reads, the idempotent task algorithm and the
repair of tasks that share a key.

The CRM enforces one task per key: the task key is a unique field there (HubSpot: a property with
``hasUniqueValue``; Salesforce: an External ID + Unique field) and tasks are written by upsert on
it. A concrete connector supplies a few small primitives (find tasks by key, upsert tasks, link
them to their leads, complete tasks, list keyed tasks); ``CrmConnectorBase.ensure_tasks``
composes them:

1. keys ``created`` in ``lf_task_keys`` are done (no call);
2. the other keys are read in the CRM by their key field, in batches: a task that exists is not
   written again, so what a rep changed on it (status, subject, due date) stays;
3. the missing ones are written ``pending`` locally, then upserted: the call is idempotent, so the
   call gate retries it (a timed-out upsert that the CRM applied lands once), and a key that a
   lost response or a crash left ``pending`` is found by step 2 of a later run and counted as
   created then (it had never been confirmed);
4. superseded tasks (``supersede``: crm_id -> task keys, or key prefixes ending in ``:``) are
   completed or left, per the mapping's ``tasks.supersede``.

``close_duplicate_tasks`` completes the extra tasks of a key (made before the key was unique, or
by hand), keeping the oldest.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Engine, select

from state import leads as state
from connectors.crm.base import Page, Quarantined, TaskSpec, WriteResult
from connectors.crm.convert import convert_record, current_values
from connectors.ratelimit import CallMeter
from connectors.retry import Action, RetryPolicy, classify, error_message
from state.schema import task_keys as task_keys_table
from leadflow.batches import chunked  # noqa: F401 - the connectors' import of the one batching helper
from mappings import CrmMapping
from scoring.tasks import lead_of_task_key

log = logging.getLogger("leadflow.connectors")
T = TypeVar("T")


@dataclass(frozen=True)
class KeyedTask:
    """A task in the CRM that carries a task key."""

    task_id: str
    key: str
    lead_id: str
    created: str  # sortable: ISO-8601 UTC
    closed: bool


@dataclass
class DuplicateRepair:
    """``close_duplicate_tasks``: per shared key, the task kept (the oldest) and the extras."""

    kept: dict[str, KeyedTask] = field(default_factory=dict)  # key -> task kept
    to_close: list[tuple[KeyedTask, KeyedTask]] = field(default_factory=list)  # (open extra, kept)
    already_closed: list[KeyedTask] = field(default_factory=list)
    closed: list[tuple[KeyedTask, KeyedTask]] = field(default_factory=list)  # (closed extra, kept)
    failed: dict[str, str] = field(default_factory=dict)  # task id -> reason



class CrmConnectorBase:
    crm: str
    mapping: CrmMapping
    task_lookup_batch = 50
    task_create_batch = 100

    def __init__(self, engine: Engine, mapping: CrmMapping, meter: CallMeter, retry: RetryPolicy,
                 mark_reads: bool = True):
        self.engine, self.mapping, self.meter, self.retry = engine, mapping, meter, retry
        self.mark_reads = mark_reads

    # ------------------------------------------------------------------ calls

    def _call(self, endpoint: str, fn: Callable[[], T], bucket: str = "default",
              reauth: Callable[[], None] | None = None, idempotent: bool = True) -> T:
        """One logical call: metered and budgeted per attempt, retried per ``retry.classify``.
        A non-idempotent call (a plain create) is tried once; upserts and updates are retried."""

        def attempt() -> T:
            with self.meter.call(endpoint, bucket):
                return fn()

        policy = self.retry if idempotent else replace(self.retry, attempts=1)
        return policy.call(attempt, reauth=reauth, on_retry=lambda _d: self.meter.retried(endpoint))

    def api_usage(self) -> dict[str, Any]:
        usage = self.meter.usage()
        usage["crm"] = self.crm
        usage["remaining"] = usage["quota"].get("daily_remaining")
        return usage

    # ------------------------------------------------------------------ reads

    @property
    def watermark_object(self) -> str:
        return self.mapping.objects["lead"]

    def _unchanged(self, modified: dict[str, datetime | None]) -> set[str]:
        return state.skippable(self.engine, self.crm, self.watermark_object, modified)

    def _add_record(self, page: Page, crm_id: str, props: dict[str, Any], company: dict[str, Any] | None = None,
                    company_id: str | None = None, native: dict[str, Any] | None = None) -> None:
        """The record as a lead on ``page`` (with the CRM's current values), or quarantined with its
        reason; ``native``: what was read for it from other CRM objects (``convert.record_to_lead``)."""
        converted = convert_record(self.mapping, crm_id, props, company, company_id, native)
        if isinstance(converted, Quarantined):
            page.quarantined.append(converted)
            return
        page.leads.append(converted)
        page.current[crm_id] = current_values(self.mapping, props, company)

    def _mark_read(self, page: Page) -> None:
        if self.mark_reads:
            state.mark_seen(self.engine, self.crm, {lead.crm_id: lead.modified_at for lead in page.leads})

    # ------------------------------------------------------------------ tasks

    def _find_tasks(self, keys: list[str]) -> dict[str, str]:
        """key -> CRM task id, for the keys whose task exists in the CRM (one batch), read by the key
        field itself (not a search index that lags); the oldest task when several share a key."""
        raise NotImplementedError

    def _upsert_tasks(self, specs: list[TaskSpec]) -> tuple[dict[str, str], set[str], dict[str, str]]:
        """Upsert one batch on the task key: (key -> task id, keys the CRM reports new, failed key ->
        reason); raises on a whole-call error."""
        raise NotImplementedError

    def _link_tasks(self, links: dict[str, tuple[str, str]]) -> dict[str, str]:
        """Associate tasks to their leads (key -> (task id, lead id)); failed key -> reason. The
        upsert itself links them where the CRM allows it (Salesforce ``WhoId``): nothing to do."""
        return {}

    def _complete_tasks(self, task_ids: list[str]) -> tuple[list[str], dict[str, str]]:
        """(completed ids, failed id -> reason)."""
        raise NotImplementedError

    def _keyed_tasks(self) -> Iterator[KeyedTask]:
        """Every task in the CRM that carries a task key."""
        raise NotImplementedError

    def find_tasks(self, keys: Iterable[str]) -> dict[str, str]:
        wanted = sorted(set(keys))
        found: dict[str, str] = {}
        for chunk in chunked(wanted, self.task_lookup_batch):
            found.update(self._find_tasks(chunk))
        return found

    def ensure_tasks(self, tasks: list[TaskSpec], supersede: dict[str, list[str]]) -> WriteResult:
        """Keys ``created`` locally need no call; the others go in batches to ``_ensure_batch``."""
        result = WriteResult()
        specs = list({t.key: t for t in tasks}.values())
        local = state.task_key_rows(self.engine, self.crm, [t.key for t in specs])
        todo: list[TaskSpec] = []
        for spec in specs:
            row = local.get(spec.key)
            if row and row["status"] in ("created", "closed") and row["crm_task_id"]:
                result.tasks_existing[spec.key] = row["crm_task_id"]
            else:
                todo.append(spec)
        sent_before = {key for key, row in local.items() if row["status"] == "pending"}
        for chunk in chunked(todo, self.task_create_batch):
            self._ensure_batch(chunk, sent_before, result)
        self._supersede(supersede, {t.key for t in specs}, result)
        return result

    def _ensure_batch(self, chunk: list[TaskSpec], sent_before: set[str], result: WriteResult) -> None:
        """Look the keys up, upsert the missing ones, link, record. A task that exists is never
        written (a rep's edits to it stay); the upsert makes a retried or repeated write land once.
        Created: upserted now, or found and sent by leadflow before (``pending``: its response was
        lost or the run stopped first). Existing: found, never sent by leadflow."""
        lead_of = {t.key: t.crm_id for t in chunk}
        try:
            found = self._find_tasks(sorted(lead_of))
            missing = [spec for spec in chunk if spec.key not in found]
            if missing:
                state.mark_tasks_pending(self.engine, self.crm, missing)
            upserted, new, failed = self._upsert_tasks(missing) if missing else ({}, set(), {})
            if set(upserted) - new:
                log.info("%s: %d upserted task(s) already existed: an earlier attempt of the same call landed",
                         self.crm, len(set(upserted) - new))
            mine = {**upserted, **{k: v for k, v in found.items() if k in sent_before}}
            failed.update(self._link_tasks({key: (task_id, lead_of[key]) for key, task_id in mine.items()}))
        except Exception as exc:  # noqa: BLE001 - classified below
            self._batch_failed(chunk, exc, result)
            return
        lost = [key for key in failed if key not in upserted and key not in found]
        state.forget_pending_tasks(self.engine, self.crm, lost)  # not in the CRM: nothing to remember
        for key, reason in failed.items():
            result.task_failures[key] = f"{self.crm}:{lead_of[key]}: task {key}: {reason}"
        done = {key: task_id for key, task_id in {**found, **upserted}.items() if key not in failed}
        state.mark_tasks_created(self.engine, self.crm, done, lead_of)
        for key, task_id in done.items():
            (result.tasks_created if key in mine else result.tasks_existing)[key] = task_id

    def _batch_failed(self, chunk: list[TaskSpec], exc: Exception, result: WriteResult) -> None:
        """A whole-batch error: quota and auth stop the run; any other fails the batch's tasks. Their
        keys stay ``pending`` either way: the upsert may have landed before the error (a lookup, an
        upsert or a link failed), and the next run's lookup tells."""
        decision = classify(exc)
        if decision.action in (Action.QUOTA, Action.REAUTH):
            raise exc
        for spec in chunk:
            result.task_failures[spec.key] = f"{self.crm}:{spec.crm_id}: task {spec.key}: {error_message(exc)}"

    def _supersede(self, supersede: dict[str, list[str]], new_keys: set[str], result: WriteResult) -> None:
        wanted = {crm_id: refs for crm_id, refs in (supersede or {}).items() if refs}
        if not wanted:
            return
        with self.engine.connect() as conn:
            rows = []
            for chunk in chunked(sorted(wanted), 500):
                rows.extend(conn.execute(
                    select(task_keys_table.c.task_key, task_keys_table.c.crm_id, task_keys_table.c.crm_task_id)
                    .where(task_keys_table.c.crm == self.crm, task_keys_table.c.crm_id.in_(chunk),
                           task_keys_table.c.status == "created")
                ).all())
        to_close: dict[str, str] = {}
        for key, crm_id, task_id in rows:
            if key in new_keys or not task_id:
                continue
            refs = wanted.get(crm_id, [])
            if any(key == ref or (ref.endswith(":") and key.startswith(ref)) for ref in refs):
                to_close[task_id] = key
        if not to_close:
            return
        if self.mapping.tasks.supersede == "leave":
            return
        closed, failed = self._complete_tasks(sorted(to_close))
        state.mark_tasks_closed(self.engine, self.crm, [to_close[i] for i in closed])
        result.tasks_closed.extend(closed)
        result.closed_for.update({task_id: lead_of_task_key(to_close[task_id]) for task_id in closed})
        for task_id, reason in failed.items():
            result.task_failures[to_close[task_id]] = f"{self.crm}: task {task_id}: {reason}"

    # ------------------------------------------------------------------ repair

    def duplicate_tasks(self) -> dict[str, list[KeyedTask]]:
        """key -> its tasks, oldest first, for every key that more than one task carries."""
        groups: dict[str, list[KeyedTask]] = defaultdict(list)
        for task in self._keyed_tasks():
            groups[task.key].append(task)
        return {key: sorted(tasks, key=lambda t: (t.created, t.task_id))
                for key, tasks in sorted(groups.items()) if len(tasks) > 1}

    def close_duplicate_tasks(self, dry_run: bool = False,
                              on_closed: Callable[[list[tuple[KeyedTask, KeyedTask]]], None] | None = None
                              ) -> DuplicateRepair:
        """Complete the open extra tasks of each shared key, keeping the oldest; ``on_closed`` gets
        each batch of (closed extra, kept) right after the CRM write (the caller audits them). A
        dry run only plans. ``lf_task_keys`` rows that named a closed extra name the kept task."""
        repair = DuplicateRepair()
        for key, tasks in self.duplicate_tasks().items():
            kept = repair.kept[key] = tasks[0]
            for extra in tasks[1:]:
                (repair.already_closed.append(extra) if extra.closed else repair.to_close.append((extra, kept)))
        if dry_run or not repair.to_close:
            return repair
        for batch in chunked(repair.to_close, self.task_create_batch):
            by_id = {extra.task_id: (extra, kept) for extra, kept in batch}
            closed, failed = self._complete_tasks(sorted(by_id))
            done = [by_id[task_id] for task_id in closed]
            repair.closed.extend(done)
            repair.failed.update(failed)
            self._repoint_task_keys(done)
            if on_closed and done:
                on_closed(done)
        return repair

    def _repoint_task_keys(self, closed: list[tuple[KeyedTask, KeyedTask]]) -> None:
        extras = {extra.task_id for extra, _ in closed}
        kept = {extra.key: keep for extra, keep in closed}
        rows = state.task_key_rows(self.engine, self.crm, list(kept))
        stale = {key: kept[key].task_id for key, row in rows.items()
                 if row["crm_task_id"] in extras and row["status"] in ("created", "pending")}
        if stale:
            state.mark_tasks_created(self.engine, self.crm, stale, {key: kept[key].lead_id for key in stale})

