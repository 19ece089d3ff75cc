"""The body of ``leadflow explain`` (imported only when the command runs)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from leadflow.canonical import Lead
from scoring.engine import Qualification, qualify_batch
from scoring.model import load_model
from scoring.schema import ModelFileError


def run_explain(lead_file: Path, now_text: str | None, model_path: Path | None, as_json: bool) -> int:
    """Print each lead's qualification; the exit code (0 ok, 2 bad input)."""
    console = Console(stderr=True)
    try:
        now = _parse_now(now_text)
        model = load_model(model_path)
        leads = _read_leads(lead_file)
    except (ModelFileError, ValueError) as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", markup=True, highlight=False, soft_wrap=True)
        return 2
    results = qualify_batch(leads, now, model)
    if as_json:
        typer.echo(json.dumps([{**q.summary(now), "warnings": lead_warnings(lead), "events": _event_rows(lead)}
                               for lead, q in zip(leads, results)], indent=2))
    else:
        out = Console()
        for lead, q in zip(leads, results):
            _print_breakdown(out, q, now)
            _print_warnings(out, lead_warnings(lead))
            _print_events(out, lead, now)
    return 0


def lead_warnings(lead: Lead) -> list[str]:
    """The lead's warnings (unknown values read as other/unknown, unknown events dropped). On a
    patient lead they describe a value and never quote it (``leadflow.redaction.unknown_value``)."""
    return list(lead.warnings)


def _print_warnings(console: Console, warnings: list[str]) -> None:
    if not warnings:
        return
    console.print(f"[bold yellow]Warnings ({len(warnings)}):[/bold yellow] values leadflow did not recognise, read as shown")
    for warning in warnings:
        console.print(f"  ! {warning}", highlight=False, markup=False)


def _event_rows(lead: Lead) -> list[dict[str, str]]:
    """Each event with where it came from (the CRM object and record, or the field), newest first."""
    return [{"type": e.type.value, "at": e.at.isoformat(), "from": e.origin or "(not recorded)"}
            for e in sorted(lead.events, key=lambda e: e.at, reverse=True)]


def _print_events(console: Console, lead: Lead, now: datetime) -> None:
    if not lead.events:
        return
    table = Table("event", "when (UTC)", "days ago", show_lines=False)
    table.add_column("from", no_wrap=True)
    for row, event in zip(_event_rows(lead), sorted(lead.events, key=lambda e: e.at, reverse=True)):
        when = event.at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M")
        table.add_row(row["type"], when, f"{(now - event.at).total_seconds() / 86400:.0f}", row["from"])
    console.print("[bold]Events:[/bold]")
    console.print(table)


def _parse_now(text: str | None) -> datetime:
    if not text:
        return datetime.now(timezone.utc)
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"--now: not an ISO-8601 time: {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _read_leads(path: Path) -> list[Lead]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"{path}: cannot read: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from None
    items = data if isinstance(data, list) else [data]
    leads = []
    for index, item in enumerate(items):
        try:
            leads.append(Lead.model_validate(item))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise ValueError(f"{path}: lead {index}: {where}: {first['msg']}") from None
    return leads


def _print_breakdown(console: Console, q: Qualification, now: datetime) -> None:
    moved = f" (was {q.previous_stage.value})" if q.previous_stage and q.stage_changed else ""
    console.rule(f"[bold]{q.crm_id}[/bold] · {q.segment} · [bold]{q.stage.value}[/bold]{moved}")
    console.print(
        f"lead score [bold]{q.lead_score}[/bold] · fit {q.fit_score} · engagement {q.engagement_score}"
        f" · model {q.model_version}",
        highlight=False,
    )
    table = Table("criterion", "score", "weight", "reasons", show_lines=False)
    for name, part in q.breakdown["criteria"].items():
        table.add_row(name, str(part["score"]), f"{part['weight']:.0%}", "\n".join(part["reasons"]))
    console.print(table)
    console.print("[bold]Why:[/bold]")
    for reason in q.reasons:
        console.print(f"  • {reason}", highlight=False, markup=False)
    step = q.next_step
    console.print(
        f"[bold]Next step:[/bold] {step.subject} — {step.priority} priority, due {step.due(now).isoformat()}"
        f" ({step.due_rule})",
        highlight=False,
    )
