"""Recording a run in the run history as it ends, however it ends, and publishing the run history
and rejected rows as Prefect artifacts (the queries are ``state.runs``)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Engine

from state.runs import COUNT_KEYS, OUTCOMES, read_failures, read_runs, record_run  # noqa: F401 - re-exported
from state.schema import utc

log = logging.getLogger("leadflow.runs")

SYNC_DEPLOYMENT = "sync-leads/{crm}-incremental"  # prefect.yaml: the scheduled sync that retries them


def error_line(exc: BaseException) -> str:
    """What a failed run's row says about its error: our own one-line messages (lock errors)
    as they are; any other error by its kind only, since its text may quote a value."""
    from state.locks import RunLocked

    if isinstance(exc, RunLocked):
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return type(exc).__name__


class RunRecorder:
    """Records a pipeline run in ``lf_runs`` when its block ends, however it ends, and publishes
    the run history and rejected rows as Prefect artifacts."""

    def __init__(self, engine: Engine, summary: Any, api_usage: Callable[[], Mapping[str, Any]] | None = None):
        self.engine, self.summary, self.api_usage = engine, summary, api_usage
        self.started = datetime.now(timezone.utc)
        self.since: datetime | None = None
        self.until: datetime | None = None

    def window(self, since: datetime | None, until: datetime | None) -> None:
        self.since, self.until = since, until

    def finish(self, error: BaseException | None) -> dict[str, Any]:
        record = dict(self.summary.as_dict())
        if not record.get("api_calls") and self.api_usage is not None:
            try:
                record["api_calls"] = int(self.api_usage().get("calls", 0))
            except Exception:  # noqa: BLE001 - a count for the history, never a reason to fail
                pass
        record.update(since=self.since, until=self.until, started_at=self.started,
                      finished_at=datetime.now(timezone.utc))
        if error is not None:
            record.update(error=error_line(error), outcome="failed")
        record_run(self.engine, record)
        return record


@contextmanager
def recording_run(engine: Engine, summary: Any, api_usage: Callable[[], Mapping[str, Any]] | None = None,
                  publish: bool = True) -> Iterator[RunRecorder]:
    """``with recording_run(engine, summary) as run:`` around a run's body; ``run.window(since, until)``
    once the window is known. A run that raises is recorded with outcome ``failed``, then re-raised."""
    recorder = RunRecorder(engine, summary, api_usage)
    try:
        yield recorder
    except BaseException as exc:
        _safely(lambda: recorder.finish(exc), "record the failed run")
        if publish:
            _safely(lambda: publish_artifacts(engine, summary.crm, summary.run_id), "publish run artifacts")
        raise
    _safely(lambda: recorder.finish(None), "record the run")
    if publish:
        _safely(lambda: publish_artifacts(engine, summary.crm, summary.run_id), "publish run artifacts")


def _safely(action: Callable[[], Any], what: str) -> None:
    try:
        action()
    except Exception as exc:  # noqa: BLE001 - history must never turn a run's result into another
        log.warning("could not %s (%s)", what, type(exc).__name__)


# --------------------------------------------------------------------------- rejected rows


def next_scheduled_run(crm: str) -> datetime | None:
    """When the CRM's scheduled sync (which retries failed and quarantined leads) runs next, as the
    Prefect server knows it; None without a server (``PREFECT_API_URL``) or a scheduled run."""
    if not _prefect_api_configured():
        return None
    try:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import (
            DeploymentFilter,
            DeploymentFilterName,
            FlowRunFilter,
            FlowRunFilterState,
            FlowRunFilterStateType,
        )
        from prefect.client.schemas.objects import StateType
        from prefect.client.schemas.sorting import FlowRunSort

        name = SYNC_DEPLOYMENT.format(crm=crm).split("/", 1)[1]
        with get_client(sync_client=True) as client:
            found = client.read_flow_runs(
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[name])),
                flow_run_filter=FlowRunFilter(state=FlowRunFilterState(
                    type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]))),
                sort=FlowRunSort.EXPECTED_START_TIME_ASC, limit=1)
    except Exception as exc:  # noqa: BLE001 - "next run" is the honest answer without a server
        log.debug("next scheduled run of %s unknown (%s)", crm, type(exc).__name__)
        return None
    return utc(found[0].expected_start_time) if found and found[0].expected_start_time else None


def _prefect_api_configured() -> bool:
    """PREFECT_API_URL in the environment, or (inside a flow) in Prefect's settings; the CLI never
    starts a temporary Prefect server just to find no schedule."""
    if os.environ.get("PREFECT_API_URL"):
        return True
    if "prefect" not in sys.modules:
        return False
    from prefect.settings import PREFECT_API_URL

    return bool(PREFECT_API_URL.value())


def failure_rows(engine: Engine, crm: str | None = None) -> list[dict[str, Any]]:
    """``read_failures`` with ``next_retry``: the next scheduled sync of the lead's CRM, or "next run"."""
    rows = read_failures(engine, crm)
    next_runs = {name: next_scheduled_run(name) for name in {row["crm"] for row in rows}}
    for row in rows:
        when = next_runs[row["crm"]]
        row["next_retry"] = f"{when:%Y-%m-%d %H:%M} UTC" if when else "next run"
    return rows


# --------------------------------------------------------------------------- views


def run_table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs as plain rows for a table artifact or JSON."""
    return [{
        "run_id": r["run_id"], "flow": r["flow"], "crm": r["crm"], "dry_run": r["dry_run"],
        "window": window_text(r["since"], r["until"]),
        "since": r["since"].isoformat() if r["since"] else None, "until": r["until"].isoformat() if r["until"] else None,
        "outcome": r["outcome"],
        **{key: r[key] for key in COUNT_KEYS}, "started_at": r["started_at"].isoformat(),
        "duration_s": r["duration_s"], "error": r["error"] or r["stopped_early"] or "",
    } for r in rows]


def failure_table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"crm": r["crm"], "crm_id": r["crm_id"], "kind": r["kind"], "reason": r["reason"],
             "attempts": r["attempts"], "first_seen": r["first_seen"].isoformat(),
             "last_seen": r["last_seen"].isoformat(), "next_retry": r["next_retry"]} for r in rows]


def window_text(since: datetime | None, until: datetime | None) -> str:
    start = f"{since:%Y-%m-%d %H:%M}" if since else "beginning"
    end = f"{until:%Y-%m-%d %H:%M}" if until else "now"
    return f"{start} → {end}"


def publish_artifacts(engine: Engine, crm: str, run_id: str, history: int = 20, max_failures: int = 500) -> None:
    """Prefect table artifacts: the CRM's latest runs and its failed and quarantined leads (the
    ``max_failures`` seen last; ``leadflow failures`` lists them all)."""
    from prefect.artifacts import create_table_artifact

    create_table_artifact(key=f"leadflow-runs-{crm}", table=run_table(read_runs(engine, crm, limit=history)),
                          description=f"latest {history} leadflow runs on {crm}")
    failures = failure_table(failure_rows(engine, crm))
    shown = f"{max_failures} of {len(failures)}" if len(failures) > max_failures else f"{len(failures)}"
    create_table_artifact(key=f"leadflow-failures-{crm}",
                          table=failures[:max_failures] or [{"crm": crm, "crm_id": "", "kind": "",
                                                             "reason": "no failed or quarantined lead", "attempts": 0,
                                                             "first_seen": "", "last_seen": "", "next_retry": ""}],
                          description=f"{shown} failed and quarantined leads on {crm}, retried by the next run "
                                      f"(run {run_id})")
