"""``leadflow sync | backfill | rescore | audit | runs | failures | unlock | demo | listen``. Prefect and the clients load inside the commands."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timezone
from enum import StrEnum
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from flows.summary import OUTCOME_TEXT, print_summary  # noqa: F401 - print_summary re-exported

console = Console()
err_console = Console(stderr=True)


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


PROGRESS_EVERY_PAGES_OFF_TTY = 10

MODEL_OPTION = typer.Option(None, "--model", metavar="PATH",
                            help="Qualification model file (default: $LEADFLOW_MODEL, else the shipped one).")
MAPPING_OPTION = typer.Option(None, "--mapping", metavar="PATH",
                              help="Field mapping file for --crm (default: $LEADFLOW_MAPPING_HUBSPOT or "
                                   "$LEADFLOW_MAPPING_SALESFORCE, else mappings/<crm>.yaml).")
QUIET_OPTION = typer.Option(False, "--quiet", "-q", help="No start-up or progress lines on stderr.")


def configure_run(crm: str, model: Optional[Path], mapping: Optional[Path]) -> None:
    """Point the run at ``--model`` / ``--mapping`` (through the settings the flow reads), then
    validate the model, the mapping, the credentials and Prefect's start-up limit: a bad file or a
    missing setting stops here, before Prefect starts and before any CRM call (exit 2, file and key)."""
    import os

    from connectors.crm.factory import MissingCredential, hubspot_config_from_env, salesforce_config_from_env
    from leadflow import settings
    from leadflow.prefect_env import check_startup_timeout
    from mappings import MappingError, load_mapping
    from scoring import load_model

    check_startup_timeout()
    if model is not None:
        os.environ["LEADFLOW_MODEL"] = str(model.expanduser().resolve())
    if mapping is not None:
        os.environ[settings.mapping_variable(crm)] = str(mapping.expanduser().resolve())
    load_model(settings.model_path())
    mapping_file = settings.mapping_path(crm)
    if mapping_file is not None:
        if mapping_file.suffix not in (".yaml", ".yml"):
            raise MappingError(mapping_file, "(file)", "a mapping file is YAML: its name ends in .yaml or .yml")
        loaded = load_mapping(mapping_file)
        if loaded.crm != crm:
            raise MappingError(mapping_file, "crm", f"this mapping is for {loaded.crm}, not {crm}")
    try:
        (hubspot_config_from_env if crm == "hubspot" else salesforce_config_from_env)()
    except MissingCredential:
        raise
    except ValueError as exc:  # a malformed LEADFLOW_* / SALESFORCE_* setting; the message names it
        raise settings.SettingError(str(exc)) from None


def run_flow(crm: str, call: Callable[[], dict[str, Any]], *, quiet: bool, as_json: bool,
             window: tuple[Optional[datetime], Optional[datetime]] | None = None) -> None:
    """Start Prefect (visibly), run ``call`` with page progress on stderr, print the summary and
    exit with the code of its outcome (0 success, 3 partial, 4 stopped early, 1 failed)."""
    from leadflow.errors import OUTCOME_EXIT_CODES
    from leadflow.progress import listen

    start_prefect(quiet)
    stop_listening = listen(_ProgressLines(window)) if not quiet else (lambda: None)
    try:
        summary = call()
    finally:
        stop_listening()
    console.print_json(json.dumps(summary, default=str)) if as_json else print_summary(summary)
    raise typer.Exit(OUTCOME_EXIT_CODES.get(summary.get("outcome", "success"), 1))


def start_prefect(quiet: bool = False) -> None:
    """Prefect's run errors off the terminal (unless --debug: the one-line error says what failed),
    and its temporary server started now, with a line saying so, unless PREFECT_API_URL is set."""
    from leadflow.errors import debug_enabled
    from leadflow.prefect_env import check_startup_timeout, ensure_server, quiet_run_errors

    check_startup_timeout()
    if not debug_enabled():
        quiet_run_errors()
    ensure_server(_say if not quiet else lambda line: None)


def _say(line: str) -> None:
    err_console.print(line, highlight=False, markup=False, soft_wrap=True)


class _ProgressLines:
    """One stderr line per page on a terminal; otherwise the first page's and one every
    ``PROGRESS_EVERY_PAGES_OFF_TTY`` pages. For a window with a known start (a backfill), the share
    of it read so far."""

    def __init__(self, window: tuple[Optional[datetime], Optional[datetime]] | None):
        self.since, self.until = window or (None, None)
        self.every = 1 if err_console.is_terminal else PROGRESS_EVERY_PAGES_OFF_TTY

    def __call__(self, event) -> None:
        if event.pages % self.every and event.pages != 1:
            return
        line = f"{event.crm}: page {event.pages}, {event.leads:,} leads read"
        share = self.share(event.cursor)
        _say(line + (f", {share:.0%} of the window" if share is not None else ""))

    def share(self, cursor: Optional[datetime]) -> Optional[float]:
        if cursor is None or self.since is None:
            return None
        until = self.until or datetime.now(timezone.utc)
        if until <= self.since:
            return None
        return min(max((cursor - self.since) / (until - self.since), 0.0), 1.0)


def sync(
    crm: CrmChoice = typer.Option(..., help="Which CRM to sync."),
    since: Optional[str] = typer.Option(None, help="ISO-8601 start; default: the stored watermark."),
    until: Optional[str] = typer.Option(None, help="ISO-8601 end (exclusive); default: now."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Compute and report changes; write nothing."),
    limit: Optional[int] = typer.Option(None, help="Stop after about this many leads (testing)."),
    as_json: bool = typer.Option(False, "--json", help="Print the run summary as JSON."),
    model: Optional[Path] = MODEL_OPTION,
    mapping: Optional[Path] = MAPPING_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Pull changed leads, qualify them and write back (credentials from the environment).

    Exit codes: 0 success, 3 partial, 4 stopped early, 1 failed (others: leadflow --help)."""
    start, end = _parse_time(since, "--since"), _parse_time(until, "--until")
    configure_run(crm.value, model, mapping)
    from flows.sync import sync_leads

    run_flow(crm.value, lambda: sync_leads(crm.value, start, end, dry_run, limit), quiet=quiet, as_json=as_json,
             window=(start, end) if start else None)


def backfill(
    crm: CrmChoice = typer.Option(...),
    since: str = typer.Option(..., help="ISO-8601 start of the range."),
    until: str = typer.Option(..., help="ISO-8601 end of the range (exclusive)."),
    dry_run: bool = typer.Option(False, "--dry-run"),
    as_json: bool = typer.Option(False, "--json"),
    model: Optional[Path] = MODEL_OPTION,
    mapping: Optional[Path] = MAPPING_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Re-qualify the leads modified in a date range; the incremental watermark stays where it is.

    Exit codes: 0 success, 3 partial, 4 stopped early, 1 failed (others: leadflow --help)."""
    start, end = _parse_time(since, "--since"), _parse_time(until, "--until")
    if end <= start:
        raise typer.BadParameter(f"must be after --since ({since})", param_hint="--until")
    configure_run(crm.value, model, mapping)
    from flows.sync import backfill as backfill_flow

    run_flow(crm.value, lambda: backfill_flow(crm.value, start, end, dry_run), quiet=quiet, as_json=as_json,
             window=(start, end))


def rescore(
    crm: CrmChoice = typer.Option(...),
    dry_run: bool = typer.Option(False, "--dry-run"),
    as_json: bool = typer.Option(False, "--json"),
    model: Optional[Path] = MODEL_OPTION,
    mapping: Optional[Path] = MAPPING_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Re-qualify every lead after a model change.

    Exit codes: 0 success, 3 partial, 4 stopped early, 1 failed (others: leadflow --help)."""
    configure_run(crm.value, model, mapping)
    from flows.sync import rescore as rescore_flow

    run_flow(crm.value, lambda: rescore_flow(crm.value, dry_run), quiet=quiet, as_json=as_json)


def _engine():
    from leadflow import settings
    from state.schema import engine_for

    return engine_for(settings.database_url())


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def audit(
    lead: Optional[str] = typer.Option(None, "--lead", help="A lead's CRM id."),
    run: Optional[str] = typer.Option(None, "--run", help="A run id (the Prefect flow run id), or a unique prefix of one."),
    crm: Optional[CrmChoice] = typer.Option(None),
    limit: int = typer.Option(100, min=1, help="Rows per page."),
    offset: int = typer.Option(0, min=0, help="Rows to skip (paging)."),
    oldest_first: bool = typer.Option(False, "--oldest-first", help="Oldest rows first (default: newest first)."),
    verify: bool = typer.Option(False, "--verify", help="Check the audit chain: exit 1 naming the first edited, "
                                                        "inserted or deleted row."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Show the audit log (newest first, paged), for a lead, a run or a CRM; or verify its hash chain."""
    from state.audit import AmbiguousRunId, page_audit, resolve_run_id

    engine = _engine()
    if verify:
        _verify(engine, crm.value if crm else None, as_json)
        return
    run_id = None
    if run:
        try:
            run_id = resolve_run_id(engine, run)
        except AmbiguousRunId as exc:
            _fail(str(exc))
        if run_id is None:
            _fail(f"no audit rows for a run id starting with {run!r}")
    page = page_audit(engine, crm_id=lead, run_id=run_id, crm=crm.value if crm else None, limit=limit,
                      offset=offset, newest_first=not oldest_first)
    if as_json:
        console.print_json(json.dumps({"total": page.total, "offset": offset, "rows": page.rows}, default=str))
        return
    subject = "lead " + lead if lead else "run " + str(run_id) if run_id else (crm.value if crm else "all CRMs")
    table = Table(title=f"audit: {subject} ({page.showing()}, {'oldest' if oldest_first else 'newest'} first)")
    for column in ("at", "run", "flow", "crm", "lead", "action", "field", "old", "new", "model", "dry run"):
        table.add_column(column, overflow="fold", no_wrap=column == "run" and console.width >= 160)
    for row in page.rows:
        table.add_row(str(row["at"])[:19], row["run_id"], row["flow"], row["crm"], row["crm_id"], row["action"],
                      row["field"] or "", _short(row["old_value"]), _short(row["new_value"]),
                      row["model_version"] or "", "yes" if row["dry_run"] else "")
    console.print(table)
    console.print(page.showing() + (f"; next page: --offset {offset + len(page.rows)}"
                                    if offset + len(page.rows) < page.total else ""))


def _verify(engine, crm: Optional[str], as_json: bool) -> None:
    from state.audit import audited_crms, verify_chain

    reports = [verify_chain(engine, name) for name in ([crm] if crm else audited_crms(engine))]
    if as_json:
        print(json.dumps([{"crm": r.crm, "rows": r.rows, "ok": r.ok, "problem": r.problem} for r in reports]))
    else:
        for report in reports:
            typer.echo(report.problem if report.problem else f"{report.crm}: audit chain intact ({report.rows} rows)")
        if not reports:
            typer.echo("audit log is empty")
    if not all(r.ok for r in reports):
        raise typer.Exit(1)


def runs(
    crm: Optional[CrmChoice] = typer.Option(None),
    limit: int = typer.Option(20, min=1, help="How many of the latest runs."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Run history, newest first: id, flow, CRM, window, outcome, counts, API calls, duration."""
    from flows.runs import read_runs, run_table

    rows = run_table(read_runs(_engine(), crm.value if crm else None, limit=limit))
    if as_json:
        print(json.dumps(rows, default=str))
        return
    table = Table(title=f"leadflow runs ({len(rows)}, newest first)")
    columns = ("started", "run", "flow", "crm", "window", "outcome", "read", "changed", "tasks", "failed",
               "quarantined", "api calls", "duration", "dry run", "note")
    for column in columns:
        table.add_column(column, overflow="fold", no_wrap=column == "run" and console.width >= 160)
    for r in rows:
        table.add_row(r["started_at"][:19].replace("T", " "), r["run_id"], r["flow"], r["crm"], r["window"],
                      r["outcome"], str(r["read"]), str(r["changed"]), str(r["tasks_created"]), str(r["failed"]),
                      str(r["quarantined"]), str(r["api_calls"]), f"{r['duration_s']:.1f} s",
                      "yes" if r["dry_run"] else "", r["error"])
    console.print(table)


def failures(
    crm: Optional[CrmChoice] = typer.Option(None),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Failed and quarantined leads (retried by the next run): id, kind, reason, attempts, next retry."""
    from flows.runs import failure_rows, failure_table

    rows = failure_table(failure_rows(_engine(), crm.value if crm else None))
    if as_json:
        print(json.dumps(rows, default=str))
        return
    if not rows:
        typer.echo("no failed or quarantined leads")
        return
    table = Table(title=f"failed and quarantined leads ({len(rows)})")
    for column in ("crm", "lead", "kind", "reason", "attempts", "first seen", "last seen", "next retry"):
        table.add_column(column, overflow="fold")
    for r in rows:
        table.add_row(r["crm"], r["crm_id"], r["kind"], r["reason"], str(r["attempts"]),
                      r["first_seen"][:19].replace("T", " "), r["last_seen"][:19].replace("T", " "), r["next_retry"])
    console.print(table)


def unlock(
    crm: CrmChoice = typer.Option(..., help="The CRM whose run lock to release."),
    yes: bool = typer.Option(False, "--yes", help="Release without asking."),
) -> None:
    """Release a CRM's run lock by hand (audited). Only for a holder known to be gone: a killed run's
    lock is taken over by the next run once its lease lapses, without this."""
    from state.locks import read_lock, unlock as release_lock

    engine = _engine()
    current = read_lock(engine, crm.value)
    if current is None:
        typer.echo(f"{crm.value}: not locked")
        return
    typer.echo(f"{crm.value}: locked by {current.describe()}")
    if not yes and not typer.confirm("Release it? A run that is still working would overlap the next one"):
        _fail("not released", code=1)
    released = release_lock(engine, crm.value)
    typer.echo(f"{crm.value}: released the lock of {released.who()}" if released else f"{crm.value}: not locked")


def _short(value: Optional[str], width: int = 40) -> str:
    if value is None:
        return ""
    return value if len(value) <= width else value[: width - 1] + "…"


def demo(
    reset: bool = typer.Option(False, "--reset", help="Forget the saved demo sandbox and state; start over."),
    leads: int = typer.Option(400, help="Leads per CRM on a fresh demo."),
) -> None:
    """Run the pipeline end to end on the built-in sandbox (no server, no credentials needed).

    Prefect's settings (start-up limit, no telemetry, quiet console) are leadflow.prefect_env's."""
    from flows.demo import run_demo

    start_prefect()
    run_demo(reset=reset, leads=leads)


def listen(
    host: str = typer.Option("127.0.0.1", help="Address to bind (behind the TLS proxy HubSpot and Salesforce call)."),
    port: int = typer.Option(8780, help="TCP port."),
    window: Optional[float] = typer.Option(None, help="Coalescing window in seconds (default "
                                           "$LEADFLOW_WEBHOOK_WINDOW_SECONDS, else 2)."),
) -> None:
    """Receive HubSpot webhooks (/webhooks/hubspot) and Salesforce Outbound Messages
    (/webhooks/salesforce) and re-qualify the changed leads within seconds (docs/operations.md)."""
    from flows.listen import ListenConfig, serve

    try:
        config = ListenConfig.from_env()
    except ValueError as exc:
        _fail(str(exc))
    if window is not None:
        config.window_s = window
    if not config.hubspot_secret and not config.salesforce_org_id:
        _fail("listen: set HUBSPOT_APP_SECRET (HubSpot webhooks) and/or SALESFORCE_ORG_ID (Outbound Messages)")
    start_prefect()
    serve(host, port, config)


def register(app: typer.Typer) -> None:
    """Add the pipeline commands to the top-level app."""
    app.command()(sync)
    app.command()(backfill)
    app.command()(rescore)
    app.command()(audit)
    app.command()(runs)
    app.command()(failures)
    app.command()(unlock)
    app.command()(demo)
    app.command()(listen)
