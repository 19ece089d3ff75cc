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
    scoring: bool = typer.Option(True, "--scoring/--no-scoring", help="Also measure scoring alone (scoring_leads_per_s)."),
    runs: str = typer.Option("backfill,incremental,no_change", help="Runs to measure (the backfill always runs)."),
    baseline_leads: Optional[int] = typer.Option(
        None, "--baseline-leads",
        help="Also measure a backfill of this size and report the growth (default 50,000 with --leads >= 500,000; 0: none)."),
    freshness: bool = typer.Option(False, "--freshness", help="Measure the time from a demo request to its stage, "
                                   "reasons and task written back through `leadflow listen` (benchmarks/freshness.py)."),
    changes: int = typer.Option(200, help="--freshness: demo requests to send."),
    rate: float = typer.Option(2.0, help="--freshness: demo requests per second."),
    sync_every: float = typer.Option(15.0, help="--freshness: seconds between the scheduled syncs running beside them."),
    peer: Optional[str] = typer.Option(None, help="Also measure a peer on the same sandbox: `dlt` (dlt's REST API "
                                       "source beside leadflow's HubSpot read phase; benchmarks/peer.py)."),
    peer_only: bool = typer.Option(False, "--peer-only", help="With --peer: measure only the peer comparison."),
    peer_paging: str = typer.Option("after", help="With --peer dlt: page by paging.next.after (`after`) or follow "
                                    "paging.next.link (`link`)."),
) -> None:
    """Benchmark sync_leads against a sandbox subprocess: time, API calls vs the minimum, 429s, CPU and RSS,
    scoring alone, and the start-up to the first CRM request with and without a running Prefect server;
    with --freshness, the time from a demo request to its stage, reasons and task written back; with
    --peer dlt, leadflow's HubSpot read phase beside dlt's REST API source (``peer_cpu_ratio``).

    A peer that cannot run (dlt not installed, a CRM without a peer) ends the command with one line
    and exit 2 before anything starts. A failed phase is reported (phase, one-line error, the stderr file) and the rest still printed;
    exit 0 when everything ran, 3 when some part failed, 1 when no measurement completed."""
    if freshness:
        from benchmarks.freshness import bench_freshness, render as render_freshness

        leads = leads if leads != 10_000 else 500
        result = bench_freshness(crm.value, leads, changes, rate, sync_every=sync_every)
        print(json.dumps(result, default=str)) if as_json else console.print(render_freshness(result), highlight=False)
        return
    from benchmarks.bench import bench as run_bench, exit_code, parse_runs, render

    if peer:
        _check_peer(peer, crm.value, peer_paging)
    if peer_only:
        if not peer:
            raise typer.BadParameter("--peer-only needs --peer", param_hint="--peer-only")
        _peer_only(peer, leads, repeat, peer_paging, as_json)
        return
    try:
        chosen = parse_runs(runs)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--runs") from None
    if baseline_leads is None:
        baseline_leads = 50_000 if leads >= 500_000 else 0
    result = run_bench(crm.value, leads, rate_limit, changed, repeat, lookback=lookback, profile=profile,
                       startup_repeat=startup_repeat, scoring=scoring, runs=chosen, baseline_leads=baseline_leads or None,
                       peer=peer, peer_paging=peer_paging)
    print(json.dumps(result, default=str)) if as_json else console.print(render(result), highlight=False)
    code = exit_code(result)
    if code:
        raise typer.Exit(code)


def _check_peer(peer: str, crm: str, paging: str) -> None:
    """Exit 2 with one line when the peer cannot run here (e.g. dlt is not installed)."""
    from benchmarks.peer import PAGING, peer_problem
    from leadflow.errors import EXIT_BAD_INPUT

    problem = peer_problem(peer, crm)
    if problem is None and paging not in PAGING:
        problem = f"leadflow bench --peer-paging: expected one of {', '.join(PAGING)}, got {paging!r}"
    if problem:
        typer.echo(problem, err=True)
        raise typer.Exit(EXIT_BAD_INPUT)


def _peer_only(peer: str, leads: int, repeat: int, paging: str, as_json: bool) -> None:
    """The peer comparison alone: printed, exit 0 / 3 (some measurement failed) / 1 (a side has none)."""
    from benchmarks.peer import bench_peer, exit_code, render

    result = bench_peer(leads, repeat, peer, paging=paging)
    print(json.dumps(result, default=str)) if as_json else console.print(render(result), highlight=False)
    code = exit_code(result)
    if code:
        raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.command()(bench)
