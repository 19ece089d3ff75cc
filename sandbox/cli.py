"""``leadflow sandbox ...`` commands."""

import typer

sandbox_app = typer.Typer(no_args_is_help=True)
