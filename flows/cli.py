"""``leadflow sync | backfill | rescore | audit | demo``. Prefect and the clients load inside the commands."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from enum import StrEnum
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

console = Console()


class CrmChoice(StrEnum):
    hubspot = "hubspot"
    salesforce = "salesforce"


def _parse_time(value: Optional[str], name: str) -> Optional[datetime]:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not an ISO-8601 date or datetime", param_hint=name) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def print_summary(summary: dict[str, Any]) -> None:
    title = f"{summary['flow']} on {summary['crm']}" + (" (dry run)" if summary["dry_run"] else "")
    table = Table(title=title)
    for column in ("read", "changed", "unchanged", "stage_moves", "tasks_created", "failed", "quarantined",
                   "api_calls"):
        table.add_column(column.replace("_", " "), justify="right")
    table.add_row(*(str(summary[c]) for c in ("read", "changed", "unchanged", "stage_moves", "tasks_created",
                                                "failed", "quarantined", "api_calls")))
    console.print(table)
    if summary.get("stopped_early"):
        console.print(f"[yellow]Stopped early:[/] {summary['stopped_early']} (state saved; the next run resumes)")
    if summary.get("preview_path"):
        console.print(f"Dry-run preview (nothing written): {summary['preview_path']}")


def sync(
    crm: CrmChoice = typer.Option(..., help="Which CRM to sync."),
    since: Optional[str] = typer.Option(None, help="ISO-8601 start; default: the stored watermark."),
    until: Optional[str] = typer.Option(None, help="ISO-8601 end (exclusive); default: now."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Compute and report changes; write nothing."),
    limit: Optional[int] = typer.Option(None, help="Stop after about this many leads (testing)."),
    as_json: bool = typer.Option(False, "--json", help="Print the run summary as JSON."),
) -> None:
    """Pull changed leads, qualify them and write back (credentials from the environment)."""
    from flows.sync import sync_leads

    summary = sync_leads(crm.value, _parse_time(since, "--since"), _parse_time(until, "--until"), dry_run, limit)
    console.print_json(json.dumps(summary, default=str)) if as_json else print_summary(summary)


def backfill(
    crm: CrmChoice = typer.Option(...),
    since: str = typer.Option(..., help="ISO-8601 start of the range."),
    until: str = typer.Option(..., help="ISO-8601 end of the range (exclusive)."),
    dry_run: bool = typer.Option(False, "--dry-run"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Re-qualify the leads modified in a date range; the incremental watermark stays where it is."""
    from flows.sync import backfill as backfill_flow

    summary = backfill_flow(crm.value, _parse_time(since, "--since"), _parse_time(until, "--until"), dry_run)
    console.print_json(json.dumps(summary, default=str)) if as_json else print_summary(summary)


def rescore(
    crm: CrmChoice = typer.Option(...),
    dry_run: bool = typer.Option(False, "--dry-run"),
) -> None:
    """Re-qualify every lead after a model change."""
    from flows.sync import rescore as rescore_flow

    print_summary(rescore_flow(crm.value, dry_run))


def audit(
    lead: Optional[str] = typer.Option(None, "--lead", help="A lead's CRM id."),
    run: Optional[str] = typer.Option(None, "--run", help="A run id (the Prefect flow run id)."),
    crm: Optional[CrmChoice] = typer.Option(None),
    limit: int = typer.Option(500),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Show the audit log for a lead or a run."""
    from flows.audit import read_audit
    from leadflow import settings
    from leadflow.store import engine_for

    if not lead and not run:
        raise typer.BadParameter("give --lead ID or --run RUN_ID")
    rows = read_audit(engine_for(settings.database_url()), crm_id=lead, run_id=run,
                      crm=crm.value if crm else None, limit=limit)
    if as_json:
        console.print_json(json.dumps(rows, default=str))
        return
    table = Table(title=f"audit: {'lead ' + lead if lead else 'run ' + str(run)} ({len(rows)} rows)")
    for column in ("at", "run", "flow", "crm", "lead", "action", "field", "old", "new", "model"):
        table.add_column(column)
    for row in rows:
        table.add_row(str(row["at"])[:19], row["run_id"][:8], row["flow"], row["crm"], row["crm_id"], row["action"],
                      row["field"] or "", _short(row["old_value"]), _short(row["new_value"]),
                      row["model_version"] or "")
    console.print(table)


def _short(value: Optional[str], width: int = 40) -> str:
    if value is None:
        return ""
    return value if len(value) <= width else value[: width - 1] + "…"


def demo(
    reset: bool = typer.Option(False, "--reset", help="Forget the saved demo sandbox and state; start over."),
    leads: int = typer.Option(400, help="Leads per CRM on a fresh demo."),
) -> None:
    """Run the pipeline end to end on the built-in sandbox (no server, no credentials needed)."""
    import os

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "CRITICAL")
    os.environ.setdefault("PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE", "100")
    os.environ.setdefault("PREFECT_SERVER_SERVICES_EVENT_PERSISTER_BATCH_SIZE", "200")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from flows.demo import run_demo

    run_demo(reset=reset, leads=leads)


def bench(
    crm: CrmChoice = typer.Option(..., help="Which CRM to benchmark."),
    leads: int = typer.Option(10_000, help="Leads to seed the sandbox with."),
    rate_limit: Optional[str] = typer.Option(None, "--rate-limit", help="Sandbox rate-limit SPEC, e.g. hubspot=190/10s."),
    changed: int = typer.Option(100, help="Leads changed through the real client before the incremental run."),
    repeat: int = typer.Option(1, help="Measurements (each in a fresh process); medians are reported."),
    lookback: Optional[int] = typer.Option(None, help="Override the incremental lookback seconds (experiment)."),
    profile: Optional[str] = typer.Option(None, help="Write a pyinstrument profile of the backfill to this path."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Benchmark sync_leads against a sandbox subprocess: time, API calls vs the minimum, 429s, CPU and RSS."""
    from leadflow.bench import bench as run_bench, render

    result = run_bench(crm.value, leads, rate_limit, changed, repeat, lookback=lookback, profile=profile)
    print(json.dumps(result, default=str)) if as_json else console.print(render(result), highlight=False)


def register(app: typer.Typer) -> None:
    """Add the pipeline commands to the top-level app."""
    app.command()(sync)
    app.command()(backfill)
    app.command()(rescore)
    app.command()(audit)
    app.command()(demo)
    app.command()(bench)
