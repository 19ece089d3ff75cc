"""``leadflow explain``: qualify leads from a JSON file and show why."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    """Add the scoring commands to the top-level app."""

    @app.command("explain")
    def explain(
        lead_file: Path = typer.Option(..., "--lead-file", help="JSON: one canonical lead or a list of them."),
        now: Optional[str] = typer.Option(None, "--now", help="The clock, ISO-8601 (default: the current UTC time)."),
        model_path: Optional[Path] = typer.Option(None, "--model", help="A model file (default: the shipped one)."),
        as_json: bool = typer.Option(False, "--json", help="Print a JSON list instead of tables."),
    ) -> None:
        """Qualify leads and explain each score, stage and next step."""
        from scoring.cli_explain import run_explain

        raise typer.Exit(run_explain(lead_file, now, model_path, as_json))
