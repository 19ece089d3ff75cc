"""The ``leadflow`` command. Each package owns its commands in its own ``cli.py``; this file only
assembles them, and keeps heavy imports (Prefect, clients) inside the commands.

Before anything imports Prefect, ``leadflow.prefect_env.apply_defaults`` sets leadflow's Prefect
defaults (start-up limit, no telemetry, a quiet console). Every command runs inside
``leadflow.errors.LeadflowGroup``: an error is one line on stderr with a documented exit code; the
traceback only with ``--debug`` (or ``LEADFLOW_DEBUG=1``).
"""

from __future__ import annotations

import typer

from leadflow.errors import LeadflowGroup
from leadflow.prefect_env import apply_defaults, debug_requested

apply_defaults(quiet=not debug_requested())

app = typer.Typer(
    name="leadflow",
    cls=LeadflowGroup,
    help="Healthcare lead qualification for Salesforce and HubSpot, orchestrated by Prefect.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def main(
    debug: bool = typer.Option(False, "--debug", envvar="LEADFLOW_DEBUG",
                               help="On an error, print the traceback before the one-line message."),
) -> None:
    """Healthcare lead qualification for Salesforce and HubSpot, orchestrated by Prefect.

    Exit codes: 0 success, 1 failed, 2 bad input, 3 partial, 4 stopped early, 5 lock held,
    6 credential refused, 7 host unreachable, 8 Prefect server did not start."""


def _register() -> None:
    from benchmarks.cli import register as register_bench
    from connectors.cli import crm_app
    from flows.cli import register as register_flows
    from flows.report_cli import register as register_report
    from state.cli import state_app
    from sandbox.cli import sandbox_app
    from scoring.cli import register as register_scoring

    app.add_typer(sandbox_app, name="sandbox", help="Run the local HubSpot/Salesforce/NPPES stand-in.")
    app.add_typer(crm_app, name="crm", help="Set up and check a CRM connection.")
    app.add_typer(state_app, name="state", help="Move the state store and audit log to another database.")
    register_scoring(app)
    register_flows(app)
    register_report(app)
    register_bench(app)


_register()

if __name__ == "__main__":
    app()
