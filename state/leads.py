"""Sync state of the CRM connectors, on the tables of state/schema.py (SQLite or PostgreSQL).

- watermarks: per (crm, object); reads start ``LOOKBACK_SECONDS`` before it (late commits);
- written values: what leadflow last wrote to each field (``never_over_manual``), plus one
  reserved row per lead, field ``__seen__``, holding the modification time leadflow last handled
  (so a lookback re-read or the echo of leadflow's own write is skipped without further calls);
- task keys: ``pending`` before the create call, ``created`` after, ``closed`` when superseded;
- pending leads: write failures and quarantined leads, re-read by id on the next run.

Every function takes a batch and runs one statement per table (never one per lead).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, delete, select, update

from connectors.crm.base import LeadUpdate, Page, TaskSpec, WriteResult
from connectors.crm.convert import stored_text
from leadflow import settings
from leadflow.batches import chunked
from leadflow.clock import utc as _aware
from leadflow.clock import utcnow
from state.schema import insert_many, pending_leads, task_keys, watermarks
from scoring.tasks import lead_of_task_key
from state.schema import written_values as written_table

SEEN_FIELD = "__seen__"
_CHUNK = 500  # ids per IN (...) - well under SQLite's and PostgreSQL's parameter limits


def _chunks(items: list[Any], size: int = _CHUNK) -> Iterable[list[Any]]:
    return chunked(items, size)


def upsert(engine: Engine, table, rows: list[dict[str, Any]], keys: list[str], conn=None) -> None:
    """Insert ``rows`` into ``table``, updating the other columns where ``keys`` already exist."""
    if not rows:
        return
    columns = list(rows[0])
    values = [tuple(row[c] for c in columns) for row in rows]
    if conn is not None:
        insert_many(conn, table, columns, values, keys)
    else:
        with engine.begin() as connection:
            insert_many(connection, table, columns, values, keys)


# --------------------------------------------------------------------------- watermarks


def _watermark_column(engine: Engine, crm: str, obj: str, column) -> datetime | None:
    with engine.connect() as conn:
        value = conn.execute(
            select(column).where(watermarks.c.crm == crm, watermarks.c.object == obj)
        ).scalar_one_or_none()
    return _aware(value)


def get_watermark(engine: Engine, crm: str, obj: str) -> datetime | None:
    return _watermark_column(engine, crm, obj, watermarks.c.value)


def set_watermark(engine: Engine, crm: str, obj: str, value: datetime, *, force: bool = False) -> datetime:
    """Store ``value`` for (crm, obj); it never moves backwards unless ``force`` (a reset).

    ``updated_at`` is bumped even when the value stays: it marks the end of a completed run, which
    is what makes the read marks taken before it trustworthy (see ``skippable``).
    """
    value = _aware(value)
    existing = get_watermark(engine, crm, obj)
    if existing is not None and existing > value and not force:
        value = existing
    upsert(engine, watermarks, [{"crm": crm, "object": obj, "value": value, "updated_at": utcnow()}], ["crm", "object"])
    return value


def watermark_updated_at(engine: Engine, crm: str, obj: str) -> datetime | None:
    return _watermark_column(engine, crm, obj, watermarks.c.updated_at)


def read_since(engine: Engine, crm: str, obj: str, lookback_seconds: int | None = None) -> datetime | None:
    """Where an incremental read starts: the watermark minus the lookback (None: full backfill)."""
    mark = get_watermark(engine, crm, obj)
    if mark is None:
        return None
    lookback = settings.LOOKBACK_SECONDS if lookback_seconds is None else lookback_seconds
    return mark - timedelta(seconds=lookback)


# --------------------------------------------------------------------------- written values


def written_values(engine: Engine, crm: str, crm_ids: Iterable[str]) -> dict[str, dict[str, str | None]]:
    """crm_id -> {field key: value leadflow last wrote} (the ``__seen__`` row left out)."""
    ids = sorted(set(crm_ids))
    out: dict[str, dict[str, str | None]] = {}
    with engine.connect() as conn:
        for chunk in _chunks(ids):
            rows = conn.execute(
                select(written_table.c.crm_id, written_table.c.field, written_table.c.value).where(
                    written_table.c.crm == crm,
                    written_table.c.crm_id.in_(chunk),
                    written_table.c.field != SEEN_FIELD,
                )
            )
            for crm_id, field, value in rows:
                out.setdefault(crm_id, {})[field] = value
    return out


def record_written(
    engine: Engine, crm: str, updates: Iterable[LeadUpdate], succeeded: Iterable[str] | None = None
) -> int:
    """Remember the values of landed updates (all of them, or those whose lead is in ``succeeded``);
    one bulk upsert. Keys are ``FieldChange.field`` (= ``convert.current_key``)."""
    ok = set(succeeded) if succeeded is not None else None
    now = utcnow()
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for upd in updates:
        if ok is not None and upd.crm_id not in ok:
            continue
        for change in upd.changes:
            rows[(upd.crm_id, change.field)] = {
                "crm": crm, "crm_id": upd.crm_id, "field": change.field,
                "value": stored_text(change.new), "written_at": now,
            }
    upsert(engine, written_table, list(rows.values()), ["crm", "crm_id", "field"])
    return len(rows)


def _seen_rows(engine: Engine, crm: str, crm_ids: Iterable[str]) -> dict[str, tuple[str, datetime, datetime]]:
    ids = sorted(set(crm_ids))
    out: dict[str, tuple[str, datetime, datetime]] = {}
    with engine.connect() as conn:
        for chunk in _chunks(ids):
            rows = conn.execute(
                select(written_table.c.crm_id, written_table.c.value, written_table.c.written_at).where(
                    written_table.c.crm == crm,
                    written_table.c.crm_id.in_(chunk),
                    written_table.c.field == SEEN_FIELD,
                )
            )
            for crm_id, value, written_at in rows:
                kind, _, stamp = (value or "").partition("|")
                if stamp:
                    out[crm_id] = (kind, _aware(datetime.fromisoformat(stamp)), _aware(written_at))
    return out


def seen_stamps(engine: Engine, crm: str, crm_ids: Iterable[str]) -> dict[str, datetime]:
    """crm_id -> the modification time leadflow last read or produced for it."""
    return {crm_id: stamp for crm_id, (_, stamp, _) in _seen_rows(engine, crm, crm_ids).items()}


def mark_seen(engine: Engine, crm: str, stamps: Mapping[str, datetime | None], kind: str = "read") -> None:
    """``read``: the modification time at read; ``echo``: the CRM's modification time right after
    leadflow's own successful write (so that write is not re-read as a change)."""
    now = utcnow()
    rows = [
        {"crm": crm, "crm_id": crm_id, "field": SEEN_FIELD, "value": f"{kind}|{_aware(stamp).isoformat()}",
         "written_at": now}
        for crm_id, stamp in stamps.items()
        if stamp is not None
    ]
    upsert(engine, written_table, rows, ["crm", "crm_id", "field"])


def skippable(engine: Engine, crm: str, obj: str, modified: Mapping[str, datetime | None]) -> set[str]:
    """Records of a read page that need no processing: unchanged since leadflow handled them.

    A record is skipped when its modification time is not newer than its mark and the mark is
    either an ``echo`` (leadflow's own successful write) or a ``read`` mark taken before the last
    completed run ended (the watermark's ``updated_at``): a run that completed processed every
    record it read. A read mark from a run that crashed is not trusted, so nothing is lost.
    """
    rows = _seen_rows(engine, crm, [k for k, v in modified.items() if v is not None])
    if not rows:
        return set()
    completed = watermark_updated_at(engine, crm, obj)
    out: set[str] = set()
    for crm_id, (kind, stamp, written_at) in rows.items():
        current = _aware(modified[crm_id])
        if current is None or current > stamp:
            continue
        if kind == "echo" or (completed is not None and written_at <= completed):
            out.add(crm_id)
    return out


# --------------------------------------------------------------------------- pending leads


def add_pending(engine: Engine, crm: str, reasons: Mapping[str, str], kind: str) -> None:
    """Record (or bump the attempts of) leads to retry next run; kind: write_failed | quarantined."""
    if not reasons:
        return
    ids = sorted(reasons)
    now = utcnow()
    with engine.begin() as conn:
        existing: dict[str, tuple[int, datetime]] = {}
        for chunk in _chunks(ids):
            for crm_id, attempts, first in conn.execute(
                select(pending_leads.c.crm_id, pending_leads.c.attempts, pending_leads.c.first_seen).where(
                    pending_leads.c.crm == crm, pending_leads.c.crm_id.in_(chunk)
                )
            ):
                existing[crm_id] = (attempts, first)
        rows = [
            {
                "crm": crm, "crm_id": crm_id, "kind": kind, "reason": reasons[crm_id][:2000],
                "attempts": existing.get(crm_id, (0, now))[0] + 1,
                "first_seen": existing.get(crm_id, (0, now))[1], "last_seen": now,
            }
            for crm_id in ids
        ]
        upsert(engine, pending_leads, rows, ["crm", "crm_id"], conn=conn)


IN_PROGRESS_REASON = "write-back started, but the run ended before it was recorded: re-read by id"


def mark_in_progress(engine: Engine, crm: str, crm_ids: Iterable[str]) -> None:
    """Leads whose write-back is about to start: pending until ``commit_page`` clears them.

    A run that stops between a page's writes and its bookkeeping (a crash, an exhausted quota)
    leaves them here, and the next run re-reads them by id. A window read cannot be relied on for
    that: leadflow's own writes are skipped as echoes (HubSpot) or filtered out by
    ``LastModifiedById`` (Salesforce ``skip_own_writes``). Leads already pending keep their row.
    """
    ids = sorted(set(crm_ids))
    if not ids:
        return
    now = utcnow()
    with engine.begin() as conn:
        known: set[str] = set()
        for chunk in _chunks(ids):
            known.update(conn.execute(select(pending_leads.c.crm_id).where(
                pending_leads.c.crm == crm, pending_leads.c.crm_id.in_(chunk))).scalars())
        rows = [{"crm": crm, "crm_id": crm_id, "kind": "in_progress", "reason": IN_PROGRESS_REASON,
                 "attempts": 0, "first_seen": now, "last_seen": now} for crm_id in ids if crm_id not in known]
        upsert(engine, pending_leads, rows, ["crm", "crm_id"], conn=conn)


def mark_pending(engine: Engine, crm: str, reasons: Mapping[str, str], kind: str = "write_failed") -> None:
    """Alias of ``add_pending`` with ``kind`` as a keyword (the flows' spelling)."""
    add_pending(engine, crm, reasons, kind)


def clear_pending(engine: Engine, crm: str, crm_ids: Iterable[str], kind: str | None = None) -> None:
    """Leads leave ``lf_pending_leads`` (only rows of ``kind``, when given)."""
    ids = sorted(set(crm_ids))
    if not ids:
        return
    with engine.begin() as conn:
        for chunk in _chunks(ids):
            where = [pending_leads.c.crm == crm, pending_leads.c.crm_id.in_(chunk)]
            if kind is not None:
                where.append(pending_leads.c.kind == kind)
            conn.execute(delete(pending_leads).where(*where))


def _only_task_left(engine: Engine, crm: str, crm_ids: set[str]) -> None:
    """Leads whose fields landed but whose task is still held: pending ``in_progress`` (an earlier
    failure is resolved), cleared once the task exists."""
    ids = sorted(crm_ids)
    if not ids:
        return
    with engine.begin() as conn:
        for chunk in _chunks(ids):
            conn.execute(update(pending_leads).where(pending_leads.c.crm == crm, pending_leads.c.crm_id.in_(chunk))
                         .values(kind="in_progress", reason=IN_PROGRESS_REASON))


def pending_ids(engine: Engine, crm: str, kind: str | None = None, limit: int | None = None) -> list[str]:
    """Leads to re-read by id this run (``connector.fetch_by_ids``), oldest first."""
    stmt = select(pending_leads.c.crm_id).where(pending_leads.c.crm == crm)
    if kind:
        stmt = stmt.where(pending_leads.c.kind == kind)
    stmt = stmt.order_by(pending_leads.c.first_seen, pending_leads.c.crm_id)
    if limit:
        stmt = stmt.limit(limit)
    with engine.connect() as conn:
        return [row[0] for row in conn.execute(stmt)]


def pending_details(engine: Engine, crm: str) -> dict[str, dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(select(pending_leads).where(pending_leads.c.crm == crm)).mappings()
        return {row["crm_id"]: dict(row) for row in rows}


# --------------------------------------------------------------------------- task keys


def task_key_rows(engine: Engine, crm: str, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
    """task key -> {crm_id, crm_task_id, status} for the keys known locally."""
    wanted = sorted(set(keys))
    out: dict[str, dict[str, Any]] = {}
    with engine.connect() as conn:
        for chunk in _chunks(wanted):
            rows = conn.execute(
                select(task_keys).where(task_keys.c.crm == crm, task_keys.c.task_key.in_(chunk))
            ).mappings()
            for row in rows:
                out[row["task_key"]] = dict(row)
    return out


def created_task_keys(engine: Engine, crm: str, keys: Iterable[str]) -> set[str]:
    """The keys whose task leadflow has created (or found) in the CRM (status created/closed)."""
    return {key for key, row in task_key_rows(engine, crm, keys).items() if row["status"] in ("created", "closed")}


def mark_tasks_pending(engine: Engine, crm: str, specs: Iterable[TaskSpec]) -> None:
    """Written before the create call: a crash after it leaves a trace the next run checks."""
    now = utcnow()
    rows = [
        {"crm": crm, "task_key": s.key, "crm_id": s.crm_id, "crm_task_id": None, "status": "pending", "created_at": now}
        for s in specs
    ]
    upsert(engine, task_keys, rows, ["crm", "task_key"])


def mark_tasks_created(engine: Engine, crm: str, created: Mapping[str, str], crm_ids: Mapping[str, str]) -> None:
    """``created``: task key -> CRM task id; ``crm_ids``: task key -> lead id."""
    now = utcnow()
    rows = [
        {"crm": crm, "task_key": key, "crm_id": crm_ids.get(key, lead_of_task_key(key)),
         "crm_task_id": task_id, "status": "created", "created_at": now}
        for key, task_id in created.items()
    ]
    upsert(engine, task_keys, rows, ["crm", "task_key"])


def mark_tasks_closed(engine: Engine, crm: str, keys: Iterable[str]) -> None:
    wanted = sorted(set(keys))
    if not wanted:
        return
    with engine.begin() as conn:
        for chunk in _chunks(wanted):
            conn.execute(
                update(task_keys)
                .where(task_keys.c.crm == crm, task_keys.c.task_key.in_(chunk))
                .values(status="closed")
            )


def forget_pending_tasks(engine: Engine, crm: str, keys: Iterable[str]) -> None:
    """Drop ``pending`` rows whose create call certainly failed (nothing was created)."""
    wanted = sorted(set(keys))
    with engine.begin() as conn:
        for chunk in _chunks(wanted):
            conn.execute(
                delete(task_keys).where(
                    and_(task_keys.c.crm == crm, task_keys.c.task_key.in_(chunk), task_keys.c.status == "pending")
                )
            )


# --------------------------------------------------------------------------- one page done


def commit_page(
    engine: Engine,
    crm: str,
    obj: str,
    page: Page,
    updates: Iterable[LeadUpdate] = (),
    result: WriteResult | None = None,
    *,
    advance: bool = True,
    keep_pending: Iterable[str] = (),
) -> datetime | None:
    """All bookkeeping after one page, for a caller that wants it in one call.

    Landed updates -> written values; failed writes and quarantined leads -> ``lf_pending_leads``
    (with their reason, re-read by id next run); the others leave it. Only then, with ``advance``,
    does the watermark move to ``page.cursor``: every lead before it is done or durably pending.
    """
    result = result or WriteResult()
    failed = dict(result.failed)
    record_written(engine, crm, [u for u in updates if u.crm_id not in failed])
    quarantined = {q.crm_id: q.reason for q in page.quarantined}
    add_pending(engine, crm, failed, "write_failed")
    add_pending(engine, crm, {k: v for k, v in quarantined.items() if k not in failed}, "quarantined")
    keep = set(keep_pending)  # leads with work still to do (a task held for a later batch)
    clear_pending(engine, crm, [lead.crm_id for lead in page.leads if lead.crm_id not in failed and lead.crm_id not in keep])
    _only_task_left(engine, crm, keep - set(failed) - set(quarantined))
    if advance and page.cursor is not None:
        return set_watermark(engine, crm, obj, page.cursor)
    return get_watermark(engine, crm, obj)


