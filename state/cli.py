"""``leadflow state copy``: move the state store and audit log to another database."""

from __future__ import annotations

from typing import Optional

import typer

state_app = typer.Typer(no_args_is_help=True)


@state_app.command("copy")
def copy(
    to: str = typer.Option(..., "--to", help="SQLAlchemy URL of the new store, e.g. postgresql+psycopg://..."),
    source: Optional[str] = typer.Option(None, "--from", help="URL of the current store (default: LEADFLOW_DATABASE_URL)."),
    force: bool = typer.Option(False, "--force", help="Replace what the target already holds."),
    batch_size: int = typer.Option(2_000, "--batch-size", min=1, help="Rows per insert."),
) -> None:
    """Copy watermarks, written values, task keys, pending leads, organization members, the
    enrichment cache and the audit log; then point LEADFLOW_DATABASE_URL at the target."""
    from sqlalchemy.exc import SQLAlchemyError

    from leadflow import settings
    from state.copy import StateCopyError, copy_state, safe_url

    source = source or settings.database_url()
    try:
        report = copy_state(source, to, force=force, batch_size=batch_size)
    except StateCopyError as exc:
        typer.echo(f"error: state copy refused: {exc}", err=True)
        raise typer.Exit(2) from None
    except (SQLAlchemyError, ValueError) as exc:
        typer.echo(f"error: state copy failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}", err=True)
        raise typer.Exit(1) from None
    for table, rows in report.rows.items():
        typer.echo(f"{table}: {rows} row(s)")
    typer.echo(f"copied {report.total} row(s) from {report.source} to {report.target}; counts verified. "
               f"Now set LEADFLOW_DATABASE_URL={safe_url(to)}")
