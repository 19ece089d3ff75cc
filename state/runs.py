"""Run history (``lf_runs``) and the rejected rows (failed and quarantined leads in
``lf_pending_leads``): the state store's side of ``leadflow runs`` / ``leadflow failures``."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Engine, select

from state.schema import insert_many, pending_leads, runs, utc

OUTCOMES = ("success", "partial", "stopped_early", "failed")
COUNT_KEYS = ("read", "changed", "unchanged", "stage_moves", "tasks_created", "tasks_closed", "failed",
              "quarantined", "retried_pending", "pages", "api_calls")
RUN_COLUMNS = ("run_id", "flow", "crm", "dry_run", "since", "until", "started_at", "finished_at", "duration_s",
               "outcome", "error", "stopped_early", *COUNT_KEYS)
FAILURE_KINDS = ("write_failed", "quarantined")


def outcome_of(summary: Mapping[str, Any]) -> str:
    """The summary's ``outcome``, or the one its counts imply."""
    if summary.get("outcome"):
        return str(summary["outcome"])
    if summary.get("error"):
        return "failed"
    if summary.get("stopped_early"):
        return "stopped_early"
    if summary.get("failed") or summary.get("quarantined"):
        return "partial"
    return "success"


def _when(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return utc(value)


def record_run(engine: Engine, summary: Mapping[str, Any]) -> None:
    """Store one run: a ``RunSummary.as_dict()`` plus ``since``, ``until``, ``started_at``,
    ``finished_at`` (default now) and, for a run that raised, ``error``. A run id recorded before
    (a Prefect flow retry) is replaced."""
    finished = _when(summary.get("finished_at")) or datetime.now(timezone.utc)
    started = _when(summary.get("started_at")) or finished
    row = {
        "run_id": str(summary["run_id"]), "flow": summary["flow"], "crm": summary["crm"],
        "dry_run": int(bool(summary.get("dry_run"))), "since": _when(summary.get("since")),
        "until": _when(summary.get("until")), "started_at": started, "finished_at": finished,
        "duration_s": round((finished - started).total_seconds(), 3), "outcome": outcome_of(summary),
        "error": summary.get("error"), "stopped_early": summary.get("stopped_early"),
        **{key: int(summary.get(key) or 0) for key in COUNT_KEYS},
    }
    with engine.begin() as conn:
        insert_many(conn, runs, RUN_COLUMNS, [tuple(row[c] for c in RUN_COLUMNS)], conflict_keys=("run_id",))


def read_runs(engine: Engine, crm: str | None = None, limit: int = 20, run_id: str | None = None
              ) -> list[dict[str, Any]]:
    """The latest runs, newest first."""
    query = select(runs).order_by(runs.c.started_at.desc(), runs.c.run_id).limit(limit)
    if crm:
        query = query.where(runs.c.crm == crm)
    if run_id:
        query = query.where(runs.c.run_id == run_id)
    with engine.connect() as conn:
        rows = [dict(row) for row in conn.execute(query).mappings()]
    for row in rows:
        for key in ("since", "until", "started_at", "finished_at"):
            row[key] = utc(row[key]) if row[key] is not None else None
        row["dry_run"] = bool(row["dry_run"])
    return rows


def read_failures(engine: Engine, crm: str | None = None) -> list[dict[str, Any]]:
    """Each failed or quarantined lead: id, kind, reason (never a value), attempts, first and last seen."""
    query = (select(pending_leads).where(pending_leads.c.kind.in_(FAILURE_KINDS))
             .order_by(pending_leads.c.crm, pending_leads.c.last_seen.desc(), pending_leads.c.crm_id))
    if crm:
        query = query.where(pending_leads.c.crm == crm)
    with engine.connect() as conn:
        rows = [dict(row) for row in conn.execute(query).mappings()]
    for row in rows:
        row["first_seen"], row["last_seen"] = utc(row["first_seen"]), utc(row["last_seen"])
    return rows
