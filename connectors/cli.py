"""``leadflow crm ...`` commands."""

from __future__ import annotations

import json

import typer

crm_app = typer.Typer(no_args_is_help=True)

CRM_OPTION = typer.Option(..., "--crm", help="hubspot | salesforce")


def _connector(crm: str):
    from connectors.factory import MissingCredential, connector_from_env

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
    from connectors.setup import hubspot_setup, salesforce_setup

    conn = _connector(crm)
    if crm == "hubspot":
        report = hubspot_setup(conn, apply=not dry_run)
        verb = "would create" if dry_run else "created"
        for line in report.created:
            typer.echo(f"{verb}: {line}")
        for line in report.existing:
            typer.echo(f"already there: {line}")
        typer.echo(report.summary(applied=not dry_run))
        return
    report = salesforce_setup(conn)
    for line in report.existing:
        typer.echo(f"already there: {line}")
    if report.missing:
        typer.echo(f"{len(report.missing)} field(s) missing - an admin must add them (Metadata API / Setup):")
        for line in report.missing:
            typer.echo(f"  missing: {line}")
        typer.echo(f"{len(report.existing)} mapped field(s) present, {len(report.missing)} missing")
        raise typer.Exit(1)
    typer.echo(f"all {len(report.existing)} mapped fields exist; nothing to create")


@crm_app.command("check")
def check(crm: str = CRM_OPTION) -> None:
    """Auth works, the schema is readable, and the remaining API quota."""
    from connectors.setup import check as run_check

    conn = _connector(crm)
    try:
        result = run_check(conn)
    except Exception as exc:  # noqa: BLE001 - report, never a traceback with request details
        from connectors.retry import error_message
        from connectors.salesforce_login import SalesforceDomainError, SalesforceLoginRefused

        reason = str(exc) if isinstance(exc, (SalesforceLoginRefused, SalesforceDomainError)) else error_message(exc)
        typer.echo(f"{crm}: check failed: {reason}", err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps(result, indent=2, default=str))
    daily = result["daily_api"]
    if daily["limit"] is not None:
        typer.echo(f"{crm}: daily API allocation {daily['used']:,} used, {daily['left']:,} left of "
                   f"{daily['limit']:,} ({daily['source']})")


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
