"""``leadflow crm ...`` commands."""

import typer

crm_app = typer.Typer(no_args_is_help=True)
