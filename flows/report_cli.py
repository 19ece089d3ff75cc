"""``leadflow report`` and ``leadflow model backtest``: the feedback loop on the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from flows.cli import CrmChoice, _parse_time, console, start_prefect

model_app = typer.Typer(help="Test a model change on history before it ships.", no_args_is_help=True)


def report(
    crm: CrmChoice = typer.Option(..., help="Which CRM's leads."),
    since: Optional[str] = typer.Option(None, help="ISO-8601: leads whose inquiry is at or after this."),
    until: Optional[str] = typer.Option(None, help="ISO-8601: leads whose inquiry is before this (default: now)."),
    out: Optional[Path] = typer.Option(None, "--out", metavar="DIR",
                                       help="Write report.json, report.md, report.html and candidate-N.yaml files here."),
    stall_days: float = typer.Option(30.0, "--stall-days", help="An MQL or SQL with no progress for this long is stalled."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No start-up lines on stderr."),
) -> None:
    """Which channels create qualified leads, where qualified leads stall, how well the score
    predicts outcomes, and suggested model changes (from leadflow's stage history and the CRM outcomes)."""
    start, end = _parse_time(since, "--since"), _parse_time(until, "--until")
    start_prefect(quiet)
    from flows.report import qualification_report

    result = qualification_report(crm.value, start, end, stall_days, str(out) if out else None)
    if as_json:
        console.print_json(json.dumps(result, default=str))
        return
    _print_report(result)


def _print_report(result: dict[str, Any]) -> None:
    from flows.report_html import render_markdown

    console.print(render_markdown(result), markup=False, highlight=False)
    if result.get("files"):
        console.print(f"Report: {result['files']['html']}", markup=False, highlight=False)


@model_app.command("backtest")
def model_backtest(
    crm: CrmChoice = typer.Option(..., help="Which CRM's leads."),
    model: Path = typer.Option(..., "--model", metavar="PATH", help="The candidate model file."),
    since: Optional[str] = typer.Option(None, help="ISO-8601: leads whose inquiry is at or after this."),
    until: Optional[str] = typer.Option(None, help="ISO-8601: leads whose inquiry is before this."),
    no_enrich: bool = typer.Option(False, "--no-enrich", help="Replay the leads as the CRM holds them, unenriched."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Replay the window's leads under today's model and the candidate, with no CRM writes: the stage
    migration matrix, the tasks that would be created or closed, each model's calibration."""
    from scoring import load_model

    start, end = _parse_time(since, "--since"), _parse_time(until, "--until")
    load_model(model)  # a bad candidate file stops here (exit 2, file and key)
    from flows.report import backtest

    result = backtest(crm.value, model, start, end, enrich=not no_enrich)
    if as_json:
        console.print_json(json.dumps(result, default=str))
        return
    _print_backtest(result)


def _print_backtest(result: dict[str, Any]) -> None:
    from rich.table import Table

    stages = sorted({s for row in result["migration"].values() for s in row} | set(result["migration"]))
    table = Table(title=f"{result['crm']}: {result['leads']} leads, {result['model_current']} (rows) → "
                        f"{result['model_candidate']} (columns)")
    table.add_column("stage")
    for stage in stages:
        table.add_column(stage, justify="right")
    for stage in stages:
        row = result["migration"].get(stage, {})
        table.add_row(stage, *(str(row.get(other, "")) for other in stages))
    console.print(table)
    console.print(f"{len(result['moved'])} lead(s) change stage; tasks created {result['tasks_created']}, "
                  f"closed {result['tasks_closed']}; Brier {result['calibration_current']['brier']} → "
                  f"{result['calibration_candidate']['brier']}", markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    app.command()(report)
    app.add_typer(model_app, name="model")
