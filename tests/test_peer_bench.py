"""``leadflow bench --peer dlt``: leadflow's HubSpot read phase and dlt's REST API source on one sandbox."""

from __future__ import annotations

import math
import sys

import pytest
from typer.testing import CliRunner

from benchmarks.bench import exit_code as bench_exit_code
from benchmarks.peer import bench_peer, exit_code, peer_result, side_order
from leadflow.cli import app


@pytest.mark.slow
@pytest.mark.parametrize("paging", ["after", "link"])
def test_both_sides_read_the_same_contacts_and_companies_through_the_real_libraries(paging):
    result = bench_peer(300, repeat=1, paging=paging, timeout=600)
    assert "failures" not in result, result.get("failures")
    ours, theirs = result["leadflow"], result["dlt"]
    assert ours["complete_measurements"] == theirs["complete_measurements"] == 1
    assert ours["leads"] == theirs["leads"] == 300
    assert ours["companies"] == theirs["companies"] > 0  # the seed's companies all have contacts
    pages = math.ceil(300 / 100)
    # leadflow's read phase: list pages and company batch reads, nothing else (no native reads, no writes)
    assert ours["api_calls_by_endpoint"] == {"hubspot.contacts.list": pages,
                                             "hubspot.companies.batch_read": math.ceil(ours["companies"] / 100)}
    # dlt follows HubSpot's paging to the end of both lists, one call per page of 100
    assert theirs["api_calls_by_endpoint"] == {"hubspot.contacts.list": pages,
                                               "hubspot.companies.list": math.ceil(theirs["companies"] / 100)}
    assert theirs["rows"]["contacts"] == 300 and theirs["rows"]["companies"] == theirs["companies"]
    assert ours["cpu_ms_per_lead"] > 0 and theirs["cpu_ms_per_lead"] > 0 and theirs["extract_cpu_ms_per_lead"] > 0
    assert result["peer_cpu_ratio"] == round(ours["cpu_ms_per_lead"] / theirs["cpu_ms_per_lead"], 3)
    assert result["order"] == ["leadflow", "dlt"] and exit_code(result) == 0


def test_the_sides_alternate_so_each_goes_first_as_often_as_the_other():
    assert side_order(1) == ["leadflow", "dlt"]
    assert side_order(3) == ["leadflow", "dlt", "dlt", "leadflow", "leadflow", "dlt"]
    firsts = side_order(4)[::2]
    assert firsts.count("leadflow") == firsts.count("dlt") == 2


def _row(side, cpu, calls=136, error=None):
    row = {"side": side, "cpu_ms_per_lead": cpu, "leads_per_s": 700.0, "wall_seconds": 14.0, "cpu_seconds": cpu * 10,
           "api_calls": calls, "leads": 10_000, "companies": 3_300, "stderr_path": f"/tmp/{side}.stderr"}
    if side == "dlt":
        row["extract_cpu_ms_per_lead"] = cpu / 3
    if error:
        row["error"] = {"phase": f"peer:{side}", "error": error}
    return row


def test_medians_per_side_give_the_ratio_and_a_failed_side_is_listed_not_counted():
    rows = [_row("leadflow", 0.30), _row("dlt", 0.60), _row("dlt", 0.58), _row("leadflow", 0.36),
            _row("leadflow", 0.33), _row("dlt", 9.0, error="exit 1: boom")]
    result = peer_result("dlt", 10_000, "after", rows)
    assert result["leadflow"]["cpu_ms_per_lead"] == 0.33 and result["leadflow"]["complete_measurements"] == 3
    assert result["dlt"]["cpu_ms_per_lead"] == 0.59 and result["dlt"]["complete_measurements"] == 2
    assert result["peer_cpu_ratio"] == round(0.33 / 0.59, 3)
    assert result["peer_extract_cpu_ratio"] == round(0.33 / (0.59 / 3), 3)
    assert result["failures"] == [{"phase": "peer:dlt", "error": "exit 1: boom", "stderr_path": "/tmp/dlt.stderr"}]
    assert exit_code(result) == 3
    assert exit_code(peer_result("dlt", 10_000, "after", rows[:1])) == 1  # dlt never completed


def test_a_failed_peer_makes_the_whole_bench_partial():
    base = {"complete_measurements": 1, "peer_cpu_ratio": None}
    assert bench_exit_code(dict(base)) == 0
    assert bench_exit_code(dict(base, peer={"error": {"phase": "peer", "error": "RuntimeError: x"}})) == 3


def test_without_dlt_the_peer_ends_with_one_line_and_exit_2(monkeypatch):
    monkeypatch.setitem(sys.modules, "dlt", None)  # `import dlt` raises ImportError, as when it is not installed
    result = CliRunner().invoke(app, ["bench", "--crm", "hubspot", "--leads", "10", "--peer", "dlt", "--peer-only"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "dlt package is not installed" in lines[0] and "Traceback" not in result.output


def test_a_crm_without_a_peer_is_refused_before_anything_starts():
    result = CliRunner().invoke(app, ["bench", "--crm", "salesforce", "--leads", "10", "--peer", "dlt", "--peer-only"])
    assert result.exit_code == 2 and "only HubSpot has a peer" in result.output


def _done(crm, leads, *args, **kwargs):
    run = {"wall_seconds": 1.0, "leads_read": leads, "leads_per_second": float(leads), "cpu_ms_per_lead": 0.5,
           "cpu_seconds": 0.1, "peak_rss_mb": 100.0, "api_calls": 3, "minimum_calls": {"total": 3},
           "calls_over_minimum": 1.0, "http_429": 0, "failures_surfaced": 0, "api_calls_by_endpoint": {},
           "summary": {"changed": 0, "tasks_created": 0, "failed": 0, "stopped_early": False}}
    return {"crm": crm, "leads": leads, "phase": "done", "runs": {"backfill": run}, "peak_rss_mb": 100.0}


def test_a_full_bench_with_the_peer_carries_its_ratio_at_the_top_and_a_failed_peer_is_reported(monkeypatch):
    import benchmarks.bench as bench_module
    import benchmarks.peer as peer_module

    monkeypatch.setattr(bench_module, "run_in_fresh_process", _done)
    rows = [_row("leadflow", 0.3), _row("dlt", 0.6)]
    monkeypatch.setattr(peer_module, "bench_peer", lambda leads, repeat, peer, seed, paging: peer_result(
        peer, leads, paging, rows))
    result = bench_module.bench("hubspot", 10, peer="dlt", startup_repeat=0, scoring=False, runs=("backfill",))
    assert result["peer_cpu_ratio"] == 0.5 and result["peer"]["leadflow"]["cpu_ms_per_lead"] == 0.3
    assert bench_exit_code(result) == 0 and "peer_cpu_ratio 0.5" in bench_module.render(result)

    def broken(*args, **kwargs):
        raise RuntimeError("sandbox did not start")

    monkeypatch.setattr(peer_module, "bench_peer", broken)
    result = bench_module.bench("hubspot", 10, peer="dlt", startup_repeat=0, scoring=False, runs=("backfill",))
    assert result["peer_cpu_ratio"] is None
    assert result["peer"] == {"error": {"phase": "peer", "error": "RuntimeError: sandbox did not start"}}
    assert bench_exit_code(result) == 3
    assert bench_module.bench("hubspot", 10, startup_repeat=0, scoring=False)["peer_cpu_ratio"] is None
