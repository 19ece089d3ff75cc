"""``leadflow bench``: the benchmark's command (registered by the ``leadflow`` entry point)."""

from __future__ import annotations

import json
from typing import Optional

import typer
from rich.console import Console

from flows.cli import CrmChoice

console = Console()


def bench(
    crm: CrmChoice = typer.Option(..., help="Which CRM to benchmark."),
    leads: int = typer.Option(10_000, help="Leads to seed the sandbox with."),
    rate_limit: Optional[str] = typer.Option(None, "--rate-limit", help="Sandbox rate-limit SPEC, e.g. hubspot=190/10s."),
    changed: int = typer.Option(100, help="Leads changed through the real client before the incremental run."),
    repeat: int = typer.Option(1, help="Measurements (each in a fresh process); medians are reported."),
    lookback: Optional[int] = typer.Option(None, help="Override the incremental lookback seconds (experiment)."),
    profile: Optional[str] = typer.Option(None, help="Write a pyinstrument profile of the backfill to this path."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    startup_repeat: int = typer.Option(5, "--startup-repeat",
                                       help="Runs of `leadflow sync` per case for startup_to_first_request_s (0: skip)."),
    freshness: bool = typer.Option(False, "--freshness", help="Measure the time from a demo request to its stage, "
                                   "reasons and task written back through `leadflow listen` (benchmarks/freshness.py)."),
    changes: int = typer.Option(200, help="--freshness: demo requests to send."),
    rate: float = typer.Option(2.0, help="--freshness: demo requests per second."),
    sync_every: float = typer.Option(15.0, help="--freshness: seconds between the scheduled syncs running beside them."),
) -> None:
    """Benchmark sync_leads against a sandbox subprocess: time, API calls vs the minimum, 429s, CPU and RSS,
    and the start-up to the first CRM request with and without a running Prefect server."""
    if freshness:
        from benchmarks.freshness import bench_freshness, render as render_freshness

        leads = leads if leads != 10_000 else 500
        result = bench_freshness(crm.value, leads, changes, rate, sync_every=sync_every)
        print(json.dumps(result, default=str)) if as_json else console.print(render_freshness(result), highlight=False)
        return
    from benchmarks.bench import bench as run_bench, render

    result = run_bench(crm.value, leads, rate_limit, changed, repeat, lookback=lookback, profile=profile,
                       startup_repeat=startup_repeat)
    print(json.dumps(result, default=str)) if as_json else console.print(render(result), highlight=False)


def register(app: typer.Typer) -> None:
    app.command()(bench)
