"""``leadflow explain``."""

import typer


def register(app: typer.Typer) -> None:
    """Add the scoring commands to the top-level app."""
