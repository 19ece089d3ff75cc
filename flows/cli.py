"""``leadflow sync | backfill | rescore | audit | demo | bench``."""

import typer


def register(app: typer.Typer) -> None:
    """Add the pipeline commands to the top-level app."""
