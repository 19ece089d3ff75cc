"""The ``leadflow`` command. Each package owns its commands in its own ``cli.py``; this file only
assembles them, and keeps heavy imports (Prefect, clients) inside the commands."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="leadflow",
    help="Healthcare lead qualification for Salesforce and HubSpot, orchestrated by Prefect.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


def _register() -> None:
    from connectors.cli import crm_app
    from flows.cli import register as register_flows
    from leadflow.state_cli import state_app
    from sandbox.cli import sandbox_app
    from scoring.cli import register as register_scoring

    app.add_typer(sandbox_app, name="sandbox", help="Run the local HubSpot/Salesforce/NPPES stand-in.")
    app.add_typer(crm_app, name="crm", help="Set up and check a CRM connection.")
    app.add_typer(state_app, name="state", help="Move the state store and audit log to another database.")
    register_scoring(app)
    register_flows(app)


_register()

if __name__ == "__main__":
    app()
