"""Prefect flows: ``sync_leads`` (incremental, on a schedule), ``backfill`` (a date range, for
revops) and ``rescore`` (every lead, after a model change). They only compose connectors/,
scoring/ and flows/pipeline.py.

A task handles a page, never one lead. Pages cross the task boundary wrapped in ``quote`` (Prefect
would otherwise walk every element of the argument). The next page is read while the previous one
is written, with at most ``MAX_PAGES_IN_FLIGHT`` pages in flight; the watermark only moves past a
page once every page before it has finished.

``run_context`` is a run's body for a context it is given (``context_for`` builds one around a
connector): the lock, the run record, pending leads retried by id, the pages, the held tasks, the
watermark. The flows hand it their pages as Prefect tasks (``PREFECT_TASKS``); ``PLAIN_CALLS`` runs
the same body with plain calls and no Prefect (the connector tests, with connectors they built).
"""

from __future__ import annotations

import logging
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.utilities.annotations import quote

from state.audit import AuditLog
from state.locks import run_lock
from flows.runs import recording_run
from flows.pipeline import PageResult, RunContext, TaskCarry, merge_examples, process_page, send_held_tasks
from flows.summary import RunSummary
from leadflow import settings
from leadflow.progress import page_done
from leadflow.runtime import frozen_heap
from state.schema import engine_for

CrmName = Literal["hubspot", "salesforce"]
MAX_PAGES_IN_FLIGHT = 2
log = logging.getLogger("leadflow.sync")


class StopRun(Exception):
    """A clean, early stop (quota or budget exhausted): state is saved, the next run resumes."""


# No Prefect retries on these tasks: every outside call is already retried by the one retry policy
# (connectors/retry.py), and a page retried whole would re-plan what it had half written.
@task(name="process-page", cache_policy=None, persist_result=False)
def process_page_task(ctx: RunContext, page) -> PageResult:
    return process_claimed_page(ctx, page)


def process_claimed_page(ctx: RunContext, page) -> PageResult:
    """``process_page`` on the page's leads this run could claim (``state.claims``). A lead a
    concurrent run is writing right now (a by-id run, a window run) is left to it and stays
    pending, so the next run re-reads it by id: never two writers on one lead, nothing lost."""
    import dataclasses

    from state import claims
    from state import leads as state
    from state.locks import lease_duration

    if ctx.dry_run:
        return process_page(ctx, page)
    ids = [lead.crm_id for lead in page.leads]
    holder = ctx.audit.run_id
    held = claims.claim(ctx.engine, ctx.crm, ids, holder, lease_duration(), _lock_holder(ctx))
    busy = set(ids) - held
    if busy:
        state.mark_in_progress(ctx.engine, ctx.crm, busy)
        page = dataclasses.replace(page, leads=[lead for lead in page.leads if lead.crm_id in held])
    try:
        return process_page(ctx, page)
    finally:
        claims.release(ctx.engine, ctx.crm, held, holder)


def _lock_holder(ctx: RunContext) -> str:
    """Whose run lock this run works under: its own, or a partitioned backfill's parent's (the
    ``Lease`` whose ``check`` guards its writes)."""
    from state.locks import Lease

    lease = getattr(ctx.audit.guard, "__self__", None)
    return lease.holder if isinstance(lease, Lease) else ctx.audit.run_id


@task(name="send-held-tasks", cache_policy=None, persist_result=False)
def send_held_tasks_task(ctx: RunContext) -> PageResult:
    return send_held_tasks(ctx)


@dataclass(frozen=True)
class PageRunner:
    """How a run hands its pages to flows/pipeline.py: ``call`` (a page, now), ``submit`` (a page,
    as something whose ``result()`` is its PageResult), ``held`` (the held tasks); ``publish``:
    whether the run publishes Prefect artifacts."""

    call: Callable[[RunContext, Any], PageResult]
    submit: Callable[[RunContext, Any], Any]
    held: Callable[[RunContext], PageResult]
    publish: bool


class _Done:
    """A page processed already, in the shape of a future."""

    def __init__(self, result: PageResult):
        self._result = result

    def result(self) -> PageResult:
        return self._result


PREFECT_TASKS = PageRunner(call=lambda ctx, page: process_page_task(quote(ctx), quote(page)),
                           submit=lambda ctx, page: process_page_task.submit(quote(ctx), quote(page)),
                           held=lambda ctx: send_held_tasks_task(quote(ctx)), publish=True)
PLAIN_CALLS = PageRunner(call=process_claimed_page, submit=lambda ctx, page: _Done(process_claimed_page(ctx, page)),
                         held=send_held_tasks, publish=False)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _run_id() -> str:
    from prefect.runtime import flow_run

    return str(flow_run.id or uuid.uuid4())


def _context(crm: str, flow_name: str, run_id: str, dry_run: bool, engine) -> RunContext:
    from connectors.enrichment.waterfall import build_waterfall
    from connectors.crm.factory import connector_from_env
    from scoring import load_model

    model = load_model(settings.model_path())
    connector = connector_from_env(crm, engine=engine, mark_reads=not dry_run)
    return context_for(connector, engine, flow_name, run_id, dry_run, build_waterfall(engine=engine), model)


def context_for(connector, engine, flow_name: str, run_id: str, dry_run: bool = False,
                waterfall: Any | None = None, model: Any | None = None) -> RunContext:
    """A run's context around a connector: the scoring model (``LEADFLOW_MODEL`` or the default
    when None), the audit log, the task carry; ``waterfall`` None runs without enrichment."""
    from scoring import load_model

    model = model if model is not None else load_model(settings.model_path())
    crm = connector.crm
    preview = settings.state_dir() / "previews" / f"{crm}-{run_id}.csv" if dry_run else None
    return RunContext(
        crm=crm,
        connector=connector,
        engine=engine,
        model=model,
        waterfall=waterfall,
        audit=AuditLog(engine, run_id=run_id, flow=flow_name, model_version=model.version, dry_run=dry_run),
        now=_now(),
        dry_run=dry_run,
        preview_path=preview,
        task_carry=None if dry_run else TaskCarry.for_connector(connector),
    )


def run_pipeline(
    crm: str,
    since: datetime | None,
    until: datetime | None,
    *,
    dry_run: bool,
    limit: int | None,
    flow_name: str,
    incremental: bool,
    parent_run_id: str | None = None,
) -> RunSummary:
    """Read, qualify and write every page in the window; the shared body of the three flows."""
    logger = get_run_logger()
    engine = engine_for(settings.database_url())
    run_id = _run_id()
    ctx = _context(crm, flow_name, run_id, dry_run, engine)
    summary = RunSummary(crm=crm, flow=flow_name, run_id=run_id, dry_run=dry_run,
                         preview_path=str(ctx.preview_path) if ctx.preview_path else None)
    run_context(ctx, summary, since, until, limit=limit, incremental=incremental, parent_run_id=parent_run_id,
                logger=logger)
    _publish(summary)
    return summary


def run_context(ctx: RunContext, summary: RunSummary, since: datetime | None, until: datetime | None, *,
                limit: int | None, incremental: bool, parent_run_id: str | None = None, logger: Any = None,
                runner: PageRunner = PREFECT_TASKS) -> RunSummary:
    """A run for this context, as the flows run it: under the CRM's run lock and recorded in
    ``lf_runs``, pending leads retried by id first, every page in the window, the held tasks, and
    the watermark moved by a completed incremental run with no limit. ``PREFECT_TASKS`` runs the
    pages as Prefect tasks (inside a flow); ``PLAIN_CALLS`` as plain calls, with no Prefect."""
    from state import leads as state

    logger = logger or log
    crm, engine, dry_run, flow_name, run_id = ctx.crm, ctx.engine, ctx.dry_run, summary.flow, summary.run_id
    with recording_run(engine, summary, ctx.connector.api_usage, publish=runner.publish) as run, \
            run_lock(engine, crm, holder=run_id, parent=parent_run_id) as lease, frozen_heap():
        ctx.audit.guard = lease.check
        watermark_object = ctx.connector.mapping.objects["lead"]
        if incremental:
            since = state.read_since(engine, crm, watermark_object)
        until = until or ctx.now
        run.window(since, until)
        moves_watermark = incremental and not dry_run and limit is None
        logger.info("%s %s: window [%s, %s)%s", flow_name, crm, since or "beginning", until,
                    " (dry run)" if dry_run else "")
        progress = _Progress(since, until) if not incremental and runner.publish else None
        try:
            if not dry_run and parent_run_id is None:
                # a partition shares the CRM with its siblings: their leads in progress are pending
                # while they run, so only a run that holds the CRM alone retries pending leads
                _retry_pending(ctx, summary, logger, runner)
            _run_pages(ctx, lease.guard(ctx.connector.iter_pages(since, until)), summary, limit, progress, logger,
                       runner)
            _send_held_tasks(ctx, summary, runner)
        except StopRun as stop:
            summary.stopped_early = str(stop)
            logger.warning("%s: stopped early: %s", crm, stop)
        if moves_watermark and summary.stopped_early is None:
            # Only a completed run moves it: that also marks every read of this run as processed
            # (state.leads.skippable). A stopped or crashed run re-reads from the old mark.
            state.set_watermark(engine, crm, watermark_object, until)
        if progress:
            progress.finish()
    _finish_summary(ctx, summary)
    return summary


def _retry_pending(ctx: RunContext, summary: RunSummary, logger, runner: PageRunner) -> None:
    from state import leads as state

    ids = state.pending_ids(ctx.engine, ctx.crm)
    if not ids:
        return
    from connectors.retry import BudgetExhausted, QuotaExhausted

    logger.info("%s: retrying %d lead(s) left pending by earlier runs", ctx.crm, len(ids))
    try:
        for page in ctx.connector.fetch_by_ids(ids):
            summary.retried_pending += len(page.leads)
            _add(summary, runner.call(ctx, page))
    except (QuotaExhausted, BudgetExhausted) as exc:  # a clean early stop, as in the window's pages
        raise StopRun(str(exc)) from exc


def _run_pages(ctx: RunContext, pages, summary: RunSummary, limit: int | None, progress, logger,
               runner: PageRunner) -> None:
    """Process pages with at most MAX_PAGES_IN_FLIGHT in flight, settled in read order."""
    from connectors.retry import BudgetExhausted, QuotaExhausted

    in_flight: deque = deque()
    try:
        for page in pages:
            if limit is not None and summary.read + sum(len(p.leads) for _, p in in_flight) >= limit:
                break
            in_flight.append((runner.submit(ctx, page), page))
            if len(in_flight) >= MAX_PAGES_IN_FLIGHT:
                _settle(in_flight.popleft(), summary, progress, logger)
        while in_flight:
            _settle(in_flight.popleft(), summary, progress, logger)
    except (QuotaExhausted, BudgetExhausted) as exc:
        for entry in in_flight:
            try:
                _settle(entry, summary, progress, logger)
            except (QuotaExhausted, BudgetExhausted):
                pass
        raise StopRun(str(exc)) from exc


def _send_held_tasks(ctx: RunContext, summary: RunSummary, runner: PageRunner) -> None:
    """The tasks pages held back to fill whole batches (``TaskCarry``), after the last page."""
    from connectors.retry import BudgetExhausted, QuotaExhausted

    if ctx.task_carry is None:
        return
    try:
        summary.add_page(runner.held(ctx))
    except (QuotaExhausted, BudgetExhausted) as exc:
        raise StopRun(str(exc)) from exc


def _settle(entry, summary: RunSummary, progress, logger) -> None:
    future, page = entry
    result = future.result()
    _add(summary, result)
    if progress and result.cursor:
        progress.update(result.cursor)
    logger.info("page %d: read %d, changed %d, tasks %d, failed %d, quarantined %d", summary.pages,
                result.read, result.changed, result.tasks_created, result.failed, result.quarantined)
    page_done(summary.crm, summary.pages, summary.read, result.cursor)


def _add(summary: RunSummary, result: PageResult) -> None:
    summary.pages += 1
    summary.add_page(result)
    for stage, source, segment in result.stages:
        summary.count_stage(stage, source, segment)
    summary.examples = merge_examples(summary.examples, result.examples, limit=5)


def _finish_summary(ctx: RunContext, summary: RunSummary) -> None:
    usage = ctx.connector.api_usage()
    summary.api_calls = int(usage.get("calls", 0))
    summary.api_remaining = usage.get("remaining")
    if ctx.waterfall is not None:
        summary.enrichment = ctx.waterfall.stats()


def _publish(summary: RunSummary) -> None:
    key = f"leadflow-{summary.flow.replace('_', '-')}-{summary.crm}"
    create_table_artifact(key=key, table=summary.table(), description=f"{summary.flow} on {summary.crm}")
    create_markdown_artifact(key=f"{key}-stages", markdown=summary.markdown(),
                             description="Stage counts by source and segment")
    if summary.rejected:
        create_markdown_artifact(key=f"{key}-rejected", markdown=summary.rejected_markdown(),
                                 description="Failed and quarantined leads, retried next run")
    if summary.preview:
        create_table_artifact(key=f"{key}-preview", table=summary.preview,
                              description="Dry run: what the real run would change, lead by lead")


class _Progress:
    """A Prefect progress artifact for a backfill, as the share of the time window covered."""

    def __init__(self, since: datetime | None, until: datetime):
        self.since, self.until = since, until
        self.artifact_id = create_progress_artifact(progress=0.0, description="backfill progress")

    def update(self, cursor: datetime) -> None:
        if self.since is None or self.until <= self.since:
            return
        share = (cursor - self.since) / (self.until - self.since)
        update_progress_artifact(self.artifact_id, progress=round(100 * min(max(share, 0.0), 1.0), 1))

    def finish(self) -> None:
        update_progress_artifact(self.artifact_id, progress=100.0)


@flow(name="sync-leads", log_prints=False)
def sync_leads(crm: CrmName, since: datetime | None = None, until: datetime | None = None,
               dry_run: bool = False, limit: int | None = None) -> dict[str, Any]:
    """Incremental sync from the stored watermark (or from ``since`` when given)."""
    summary = run_pipeline(crm, since, until, dry_run=dry_run, limit=limit, flow_name="sync_leads",
                           incremental=since is None)
    return summary.as_dict()


@flow(name="backfill-leads", log_prints=False)
def backfill(crm: CrmName, since: datetime, until: datetime, dry_run: bool = False,
             parent_run_id: str | None = None) -> dict[str, Any]:
    """Re-qualify every lead modified in [since, until); never moves the incremental watermark.
    ``parent_run_id`` is set when this run is one partition of ``partitioned_backfill``."""
    if until <= since:
        raise ValueError(f"backfill: until ({until.isoformat()}) must be after since ({since.isoformat()})")
    summary = run_pipeline(crm, since, until, dry_run=dry_run, limit=None, flow_name="backfill",
                           incremental=False, parent_run_id=parent_run_id)
    return summary.as_dict()


@flow(name="rescore-leads", log_prints=False)
def rescore(crm: CrmName, dry_run: bool = False) -> dict[str, Any]:
    """Re-qualify every lead after a model change; writes only what the new model changes."""
    summary = run_pipeline(crm, None, None, dry_run=dry_run, limit=None, flow_name="rescore",
                           incremental=False)
    return summary.as_dict()


# --------------------------------------------------------------------------- by id (notifications)

FAST_LANE_WAIT_SECONDS = 5.0  # how long a by-id run waits for a lead a window run's page is writing


def _fast_lane_key(crm: str) -> str:
    return f"{crm}:by-id"


def _enter_fast_lane(engine, crm: str, run_id: str, wait: float) -> bool:
    """Take the by-id runs' own lock (``<crm>:by-id`` in lf_run_locks, the CRM lock's lease and
    heartbeat): one by-id run per CRM at a time, never behind the scheduled sync or a backfill.
    Waits up to ``wait`` seconds for another by-id run; False when it is still there."""
    import time

    from state.locks import RunLocked, acquire

    deadline = time.monotonic() + wait
    while True:
        try:
            acquire(engine, _fast_lane_key(crm), run_id)
            return True
        except RunLocked:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)


@contextmanager
def _fast_lane(engine, crm: str, run_id: str):
    """Hold the fast lane taken by ``_enter_fast_lane``: renewed by a heartbeat, released at the end."""
    from state.locks import Lease, lease_duration, release

    try:
        with Lease(engine, _fast_lane_key(crm), run_id, lease_duration()) as beat:
            yield beat
    finally:
        release(engine, _fast_lane_key(crm), run_id)


def _claim_waiting(engine, crm: str, ids: list[str], holder: str, wait: float) -> set[str]:
    """Claim ``ids``, waiting up to ``wait`` seconds for those a window run's page holds (a page
    holds its leads for seconds)."""
    import time

    from state import claims
    from state.locks import lease_duration

    deadline = time.monotonic() + wait
    held = claims.claim(engine, crm, ids, holder, lease_duration())
    while len(held) < len(set(ids)) and time.monotonic() < deadline:
        time.sleep(0.1)
        held |= claims.claim(engine, crm, sorted(set(ids) - held), holder, lease_duration())
    return held


def requalify(crm: str, ids: list[str], company_ids: Iterable[str] = (), *,
              wait: float | None = None) -> RunSummary:
    """Read the leads by id and run them through the page pipeline now, beside whatever window run
    holds the CRM lock: the leads are claimed first (``state.claims``), so neither run writes a
    lead the other is writing; leads that stay claimed, or a busy fast lane, leave the ids pending
    for the next run. Audited and recorded in ``lf_runs`` like every run. ``wait`` (default
    ``FAST_LANE_WAIT_SECONDS``, read at the call, so tests can shorten it) bounds each wait."""
    from state import claims
    from state import leads as state

    wait = FAST_LANE_WAIT_SECONDS if wait is None else wait
    logger = get_run_logger()
    engine = engine_for(settings.database_url())
    run_id = _run_id()
    ctx = _context(crm, "requalify_leads", run_id, False, engine)
    ids = sorted({str(i) for i in ids} | _leads_of_companies(ctx.connector, list(company_ids)))
    ctx.task_carry = None  # a small batch: every page sends its own tasks
    summary = RunSummary(crm=crm, flow="requalify_leads", run_id=run_id, dry_run=False)
    with recording_run(engine, summary, ctx.connector.api_usage, publish=False) as run:
        run.window(None, None)
        if not _enter_fast_lane(engine, crm, run_id, wait):
            state.mark_in_progress(engine, crm, ids)
            summary.stopped_early = "another by-id run holds the fast lane: the leads are left pending"
            logger.warning("%s: %s", crm, summary.stopped_early)
            return summary
        with _fast_lane(engine, crm, run_id) as lease:
            ctx.audit.guard = lease.check
            held = _claim_waiting(engine, crm, ids, run_id, wait)
            if len(held) < len(ids):
                state.mark_in_progress(engine, crm, set(ids) - held)
                logger.info("%s: %d lead(s) busy in another run: left pending", crm, len(ids) - len(held))
            try:
                for page in ctx.connector.fetch_by_ids(sorted(held)):
                    _add(summary, process_page_task(quote(ctx), quote(page)))
            except Exception as exc:
                from connectors.retry import BudgetExhausted, QuotaExhausted

                if not isinstance(exc, (QuotaExhausted, BudgetExhausted)):
                    raise
                summary.stopped_early = str(exc)
                state.mark_in_progress(engine, crm, held)
            finally:
                claims.release(engine, crm, held, run_id)
        _finish_summary(ctx, summary)
    logger.info("%s: re-qualified %d lead(s) by id: changed %d, tasks %d", crm, summary.read, summary.changed,
                summary.tasks_created)
    return summary


def _leads_of_companies(connector, company_ids: list[str]) -> set[str]:
    """HubSpot: the contacts associated with these companies (one associations batch read per 100)."""
    if not company_ids or not hasattr(connector, "resolver"):
        return set()
    out: set[str] = set()
    for start in range(0, len(company_ids), 100):
        data = connector.transport.associations(connector.company_type, connector.lead_type,
                                                company_ids[start:start + 100])
        for row in data.get("results") or []:
            out.update(str(link["toObjectId"]) for link in row.get("to") or [])
    return out


@flow(name="requalify-leads", log_prints=False)
def requalify_leads(crm: CrmName, ids: list[str], company_ids: list[str] | None = None) -> dict[str, Any]:
    """Re-qualify a small batch of leads by id now (the webhook receiver's flow; HubSpot company
    ids stand for their contacts): the same page pipeline, audited, recorded in ``lf_runs``,
    never waiting behind a window run."""
    return requalify(crm, ids, company_ids or []).as_dict()
