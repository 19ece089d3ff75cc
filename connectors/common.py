"""What the HubSpot and Salesforce connectors share: the call gate (limiter, budget, retries,
accounting), the skip-what-is-unchanged filter on reads, and the idempotent task algorithm.

A concrete connector supplies a few small primitives (find tasks by key, create tasks, complete
tasks); ``CrmConnectorBase.ensure_tasks`` composes them:

1. keys ``created`` in ``lf_task_keys`` are done (no call);
2. the other keys are looked up in the CRM by their key property, in batches (``IN``);
3. what is still missing is written ``pending`` locally, *then* created; created ones become
   ``created``. A crash between the create call and the local update leaves ``pending`` rows,
   and step 2 finds those tasks on the next run - never a duplicate. A create call that failed
   with a retryable error is not blindly retried: the keys are looked up again first.
4. superseded tasks (``supersede``: crm_id -> task keys, or key prefixes ending in ``:``) are
   completed or left, per the mapping's ``tasks.supersede``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Engine, select

from connectors import state
from connectors.base import Page, Quarantined, TaskSpec, WriteResult
from connectors.convert import convert_record, current_values
from connectors.ratelimit import CallMeter
from connectors.retry import Action, RetryPolicy, classify, error_message
from leadflow.store import task_keys as task_keys_table
from mappings import CrmMapping

log = logging.getLogger("leadflow.connectors")
T = TypeVar("T")


def chunked(items: list[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class CrmConnectorBase:
    crm: str
    mapping: CrmMapping
    task_lookup_batch = 50
    task_create_batch = 100
    task_create_rounds = 3

    def __init__(self, engine: Engine, mapping: CrmMapping, meter: CallMeter, retry: RetryPolicy,
                 mark_reads: bool = True):
        self.engine, self.mapping, self.meter, self.retry = engine, mapping, meter, retry
        self.mark_reads = mark_reads

    # ------------------------------------------------------------------ calls

    def _call(self, endpoint: str, fn: Callable[[], T], bucket: str = "default",
              reauth: Callable[[], None] | None = None, idempotent: bool = True) -> T:
        """One logical call: metered and budgeted per attempt, retried per ``retry.classify``.
        A non-idempotent call (create) is tried once; its caller looks up what landed first."""

        def attempt() -> T:
            self.meter.before(endpoint, bucket)
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
        """key -> CRM task id, for the keys whose task exists in the CRM (one batch)."""
        raise NotImplementedError

    def _create_tasks(self, specs: list[TaskSpec]) -> tuple[dict[str, str], dict[str, str]]:
        """(created key -> task id, failed key -> reason), one batch; raises on a whole-call error."""
        raise NotImplementedError

    def _complete_tasks(self, task_ids: list[str]) -> tuple[list[str], dict[str, str]]:
        """(completed ids, failed id -> reason)."""
        raise NotImplementedError

    def find_tasks(self, keys: Iterable[str]) -> dict[str, str]:
        wanted = sorted(set(keys))
        found: dict[str, str] = {}
        for chunk in chunked(wanted, self.task_lookup_batch):
            found.update(self._find_tasks(chunk))
        return found

    def ensure_tasks(self, tasks: list[TaskSpec], supersede: dict[str, list[str]]) -> WriteResult:
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
        if todo:
            self._create_missing(todo, result)
        self._supersede(supersede, {t.key for t in specs}, result)
        return result

    def _create_missing(self, todo: list[TaskSpec], result: WriteResult) -> None:
        by_key = {t.key: t for t in todo}
        lead_of = {t.key: t.crm_id for t in todo}
        for round_no in range(self.task_create_rounds):
            found = self.find_tasks(by_key)
            if found:
                state.mark_tasks_created(self.engine, self.crm, found, lead_of)
                result.tasks_existing.update(found)
            missing = [spec for key, spec in by_key.items() if key not in found]
            if not missing:
                return
            state.mark_tasks_pending(self.engine, self.crm, missing)
            retry_keys: dict[str, TaskSpec] = {}
            for chunk in chunked(missing, self.task_create_batch):
                try:
                    created, failed = self._create_tasks(chunk)
                except Exception as exc:  # noqa: BLE001 - classified below
                    decision = classify(exc)
                    if decision.action is Action.RETRY and round_no + 1 < self.task_create_rounds:
                        retry_keys.update({s.key: s for s in chunk})  # outcome unknown: look up first
                        continue
                    if decision.action in (Action.QUOTA, Action.REAUTH):
                        raise
                    for spec in chunk:
                        result.task_failures[spec.key] = f"{self.crm}:{spec.crm_id}: task {spec.key}: {error_message(exc)}"
                    if decision.action is Action.FATAL:
                        state.forget_pending_tasks(self.engine, self.crm, [s.key for s in chunk])
                    continue
                state.mark_tasks_created(self.engine, self.crm, created, lead_of)
                result.tasks_created.update(created)
                if failed:
                    state.forget_pending_tasks(self.engine, self.crm, list(failed))
                    for key, reason in failed.items():
                        result.task_failures[key] = f"{self.crm}:{lead_of[key]}: task {key}: {reason}"
            if not retry_keys:
                return
            self.retry.sleep(self.retry.base_wait * (2 ** round_no))
            by_key = retry_keys

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
        for task_id, reason in failed.items():
            result.task_failures[to_close[task_id]] = f"{self.crm}: task {task_id}: {reason}"
