"""``leadflow crm ...`` commands."""

from __future__ import annotations

import json

import typer

crm_app = typer.Typer(no_args_is_help=True)

CRM_OPTION = typer.Option(..., "--crm", help="hubspot | salesforce")


def _connector(crm: str):
    from connectors.crm.factory import MissingCredential, connector_from_env

    try:
        return connector_from_env(crm)
    except (MissingCredential, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@crm_app.command("setup")
def setup(
    crm: str = CRM_OPTION,
    dry_run: bool = typer.Option(False, "--dry-run", help="HubSpot: only list what would be created"),
) -> None:
    """HubSpot: create the leadflow property group and properties. Salesforce: list missing fields."""
    from connectors.crm.setup import hubspot_setup, salesforce_setup

    conn = _connector(crm)
    if crm == "hubspot":
        report = hubspot_setup(conn, apply=not dry_run)
        verb = "would create" if dry_run else "created"
        for line in report.created:
            typer.echo(f"{verb}: {line}")
        for line in report.existing:
            typer.echo(f"already there: {line}")
        typer.echo(report.summary(applied=not dry_run))
        _notes(report.notes)
        _problems(report.problems)
        return
    report = salesforce_setup(conn)
    for line in report.existing:
        typer.echo(f"already there: {line}")
    if report.missing:
        typer.echo(f"{len(report.missing)} field(s) missing - an admin must add them (Metadata API / Setup):")
        for line in report.missing:
            typer.echo(f"  missing: {line}")
        typer.echo(f"{len(report.existing)} mapped field(s) present, {len(report.missing)} missing")
    _notes(report.notes)
    _problems(report.problems)
    if report.missing:
        raise typer.Exit(1)
    typer.echo(f"all {len(report.existing)} mapped fields exist; nothing to create")


def _notes(notes: list[str]) -> None:
    for line in notes:
        typer.echo(f"note: {line}")


def _problems(problems: list[str]) -> None:
    """One line per field that exists but not as leadflow needs it (exit 1)."""
    for line in problems:
        typer.echo(f"problem: {line}", err=True)
    if problems:
        raise typer.Exit(1)


@crm_app.command("check")
def check(crm: str = CRM_OPTION) -> None:
    """Auth works, the schema is readable, the remaining API quota; with native stages on, each
    value the mapping names that the CRM's own options lack is a problem line (exit 1)."""
    from connectors.crm.setup import check as run_check

    conn = _connector(crm)
    result = run_check(conn)  # a refused credential or unreachable host: one line and its exit code (leadflow.errors)
    typer.echo(json.dumps(result, indent=2, default=str))
    daily = result["daily_api"]
    if daily["limit"] is not None:
        typer.echo(f"{crm}: daily API allocation {daily['used']:,} used, {daily['left']:,} left of "
                   f"{daily['limit']:,} ({daily['source']})")
    marker = result.get("sync_marker")
    if marker and not marker["present"]:
        _notes([f"{crm}: no lead property {marker['property']}: leadflow re-reads its own writes as echoes "
                "until `leadflow crm setup` creates it"])
    native = result["native_stages"]
    if native["enabled"]:
        for line in native["missing_values"]:
            typer.echo(f"problem: {line}", err=True)
        if native["missing_values"]:
            raise typer.Exit(1)
    else:
        _notes([f"{line}; native stages are off" for line in native["missing_values"]])


@crm_app.command("connect")
def connect(crm: str = CRM_OPTION) -> None:
    """Store the CRM's secrets as Prefect Secret blocks (prompted, never echoed or printed).

    Workers then need only the non-secret settings (instance URL, username) in their environment."""
    from leadflow.secrets import SECRET_VARIABLES, prefect_api_configured, save_credential

    if crm not in SECRET_VARIABLES:
        typer.echo(f"error: unknown CRM {crm!r}: expected hubspot or salesforce", err=True)
        raise typer.Exit(2)
    import prefect  # noqa: F401 - settings, so a configured profile counts too

    if not prefect_api_configured():
        typer.echo("error: Secret blocks live on a Prefect server: set PREFECT_API_URL first", err=True)
        raise typer.Exit(2)
    for variable in SECRET_VARIABLES[crm]:
        value = typer.prompt(f"{variable} (empty to skip)", default="", hide_input=True, show_default=False)
        if value:
            typer.echo(f"saved Secret block {save_credential(variable, value)}")


@crm_app.command("repair-tasks")
def repair_tasks(
    crm: str = CRM_OPTION,
    dry_run: bool = typer.Option(False, "--dry-run", help="only list the tasks that would be closed"),
) -> None:
    """Complete the extra tasks of every task key that several tasks share (from before the key was
    unique, or made by hand), keeping the oldest; each closure has its audit row (``task_closed``).

    Exit 0 when nothing is left to close, 1 when some closures failed."""
    import uuid

    from connectors.retry import error_message
    from state.audit import AuditEntry, AuditLog

    conn = _connector(crm)
    audit = AuditLog(conn.engine, run_id=f"repair-tasks-{uuid.uuid4()}", flow="repair-tasks", model_version=None,
                     dry_run=dry_run)

    def record(closed) -> None:
        audit.record(AuditEntry(conn.crm, extra.lead_id, "task_closed", extra.key, None, extra.task_id,
                                [f"duplicate of task {kept.task_id} (the oldest with this key, kept)"])
                     for extra, kept in closed)

    try:
        repair = conn.close_duplicate_tasks(dry_run=dry_run, on_closed=record)
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback with request details
        typer.echo(f"{crm}: repair-tasks failed: {error_message(exc)}", err=True)
        raise typer.Exit(1) from None
    verb = "would close" if dry_run else "closed"
    for extra, kept in (repair.to_close if dry_run else repair.closed):
        typer.echo(f"{verb}: task {extra.task_id} (key {extra.key}); kept {kept.task_id}")
    for task_id, reason in repair.failed.items():
        typer.echo(f"failed: task {task_id}: {reason}", err=True)
    done = len(repair.to_close) if dry_run else len(repair.closed)
    typer.echo(f"{len(repair.kept)} key(s) shared by several tasks; {done} task(s) {verb}; "
               f"{len(repair.already_closed)} extra(s) already closed; {len(repair.failed)} failed")
    if repair.failed:
        raise typer.Exit(1)
