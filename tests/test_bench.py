"""``leadflow bench``: the minimum-call arithmetic, and a small end-to-end measurement (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.bench import aggregate, exit_code, growth, minimum_calls, parse_runs, run_in_fresh_process


def test_minimum_hubspot_backfill_counts_pages_companies_writes_and_task_batches():
    work = {"leads": 50_000, "companies": 16_501, "lead_writes": 50_000, "company_writes": 7_000,
            "task_lookups": 9_001, "tasks_created": 9_001, "compare_leads": 50_000, "compare_companies": 7_000}
    assert minimum_calls("hubspot", "backfill", work) == {
        "read": 500, "company_read": 166, "lead_write": 500, "company_write": 70, "task_lookup": 91,
        "task_create": 91, "task_link": 91, "compare_read": 570, "total": 2079}


def test_minimum_incremental_reads_by_search_and_resolves_associations():
    got = minimum_calls("hubspot", "incremental", {"leads": 100, "companies": 80, "lead_writes": 90})
    assert got == {"read": 1, "associations": 1, "company_read": 1, "lead_write": 1, "total": 4}


def test_minimum_salesforce_and_an_empty_run_needs_one_call():
    got = minimum_calls("salesforce", "backfill", {"leads": 10_000, "lead_writes": 10_000, "task_lookups": 1_931,
                                                   "tasks_created": 1_931, "compare_leads": 10_000})
    assert got == {"read": 5, "lead_write": 50, "task_lookup": 10, "task_create": 10, "compare_read": 50,
                   "total": 125}
    assert minimum_calls("salesforce", "no_change", {"leads": 0}) == {"read": 1, "total": 1}
    assert minimum_calls("hubspot", "no_change", {}) == {"read": 1, "total": 1}


@pytest.mark.slow
def test_bench_200_leads_hubspot_end_to_end():
    result = run_in_fresh_process("hubspot", 200, None, 20, 42, timeout=600)
    assert result["crm"] == "hubspot" and result["leads"] == 200
    assert result["phase"] == "done" and "error" not in result and result["worker_exit_code"] == 0
    assert Path(result["stderr_path"]).is_file()
    assert set(result["runs"]) == {"backfill", "incremental", "no_change"}
    for name, run in result["runs"].items():
        for key in ("wall_seconds", "leads_per_second", "cpu_ms_per_lead", "peak_rss_mb", "api_calls",
                    "api_calls_by_endpoint", "minimum_calls", "calls_over_minimum", "http_429", "failures_surfaced"):
            assert key in run, (name, key)
        assert run["api_calls"] == sum(run["api_calls_by_endpoint"].values())
        assert run["calls_over_minimum"] == round(run["api_calls"] / run["minimum_calls"]["total"], 3)
        assert run["http_429"] == 0 and run["failures_surfaced"] == 0
        assert abs(run["cpu_user_seconds"] + run["cpu_sys_seconds"] - run["cpu_seconds"]) <= 0.02
        assert len(run["gc_collections"]) == 3 and 0 <= run["gc_seconds"] <= run["wall_seconds"]
    assert sum(result["runs"]["backfill"]["gc_collections"]) > 0  # the meter sees the run's collections
    backfill = result["runs"]["backfill"]
    assert backfill["leads_read"] == 200 and backfill["summary"]["changed"] > 0
    assert backfill["minimum_calls"]["read"] == 2  # 200 leads at 100 per list page
    assert backfill["calls_over_minimum"] >= 1.0
    assert result["runs"]["incremental"]["summary"]["read"] >= 20
    assert result["runs"]["no_change"]["api_calls"] <= 2
    assert result["peak_rss_mb"] > 0 and "no_change_le_2_calls" in result["targets"]


def test_a_phase_that_fails_still_yields_the_result_with_its_phase_error_and_stderr(tmp_path, monkeypatch):
    monkeypatch.setenv("LEADFLOW_BENCH_LOG_DIR", str(tmp_path))
    monkeypatch.delenv("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", raising=False)
    result = run_in_fresh_process("hubspot", 20, None, 2, 42, timeout=300, extra_args=["--fail-at", "setup"])
    assert result["error"] == {"phase": "setup", "error": "RuntimeError: failure injected at setup"}
    assert result["worker_exit_code"] == 1 and result["runs"] == {}
    assert result["sandbox_start_seconds"] >= 0 and result["prefect_startup_seconds"] >= 0  # phases before it ran
    assert result["prefect_startup_limit_seconds"] == 600  # the bench's limit, not leadflow's 180 s
    stderr = Path(result["stderr_path"])
    assert stderr.parent == tmp_path and "failure injected at setup" in stderr.read_text()  # the whole traceback
    assert json.loads(Path(result["result_path"]).read_text())["error"] == result["error"]  # kept beside it
    assert not Path(result["workdir"]).exists()  # removed once the worker had exited
    assert aggregate([result])["failures"] == [dict(result["error"], stderr_path=str(stderr))]
    assert exit_code(aggregate([result])) == 1


def test_a_worker_that_dies_before_any_phase_is_reported_with_its_last_error_line(tmp_path, monkeypatch):
    monkeypatch.setenv("LEADFLOW_BENCH_LOG_DIR", str(tmp_path))
    result = run_in_fresh_process("hubspot", 20, None, 2, 42, timeout=120, extra_args=["--fail-at", "no-such-phase"])
    assert result["worker_exit_code"] == 2 and result["error"]["phase"] == "worker"
    assert result["error"]["error"].startswith("exit 2: ") and "--fail-at" in result["error"]["error"]
    assert Path(result["stderr_path"]).read_text()


def test_medians_come_from_the_complete_measurements_and_the_failed_ones_are_listed():
    def run(cpu: float) -> dict:
        return {"wall_seconds": 1.0, "leads_per_second": 100.0, "cpu_ms_per_lead": cpu, "peak_rss_mb": 300.0,
                "api_calls": 3, "failures_surfaced": 0, "summary": {}}

    done = [{"crm": "hubspot", "leads": 100, "phase": "done", "peak_rss_mb": 300.0, "stderr_path": f"/x/{i}",
             "runs": {"backfill": run(cpu), "incremental": run(cpu), "no_change": run(cpu)}} for i, cpu in
            enumerate((1.0, 3.0, 2.0))]
    failed = {"crm": "hubspot", "leads": 100, "phase": "backfill", "runs": {}, "stderr_path": "/x/f",
              "error": {"phase": "backfill", "error": "OperationalError: unable to open database file"}}
    out = aggregate([done[0], failed, done[1], done[2]])
    assert out["runs"]["backfill"]["cpu_ms_per_lead"] == 2.0 and out["cpu_ms_per_lead"] == 2.0
    assert out["complete_measurements"] == 3 and out["measurements"] == 4
    assert out["failures"] == [{"phase": "backfill", "error": "OperationalError: unable to open database file",
                                "stderr_path": "/x/f"}]
    assert exit_code(out) == 3


def test_medians_of_a_backfill_measured_alone_leave_the_other_runs_out():
    def measured(cpu: float) -> dict:
        return {"crm": "hubspot", "leads": 100, "phase": "done", "peak_rss_mb": 300.0, "stderr_path": "/x",
                "runs": {"backfill": {"wall_seconds": 1.0, "cpu_ms_per_lead": cpu, "api_calls": 3,
                                             "failures_surfaced": 0}}}

    out = aggregate([measured(1.0), measured(3.0), measured(2.0)])
    assert set(out["runs"]) == {"backfill"} and out["runs"]["backfill"]["cpu_ms_per_lead"] == 2.0
    assert out["incremental_calls"] is None and out["nochange_calls"] is None and exit_code(out) == 0


def test_growth_compares_the_backfill_per_lead_and_its_peak_rss_with_the_baseline():
    big = {"leads": 500_000, "runs": {"backfill": {"wall_seconds": 1100.0, "leads_read": 500_000,
                                                   "cpu_ms_per_lead": 2.2, "pipeline_peak_rss_mb": 520.0,
                                                   "peak_rss_mb": 700.0}}}
    small = {"leads": 50_000, "runs": {"backfill": {"wall_seconds": 100.0, "leads_read": 50_000,
                                                    "cpu_ms_per_lead": 2.0, "pipeline_peak_rss_mb": 400.0,
                                                    "peak_rss_mb": 420.0}}}
    assert growth(big, small) == {"leads": [500_000, 50_000], "wall_per_lead": 1.1, "cpu_per_lead": 1.1,
                                  "pipeline_peak_rss": 1.3, "peak_rss": 1.667}
    assert parse_runs("no_change, backfill") == ("backfill", "no_change")
    with pytest.raises(ValueError, match="unknown run"):
        parse_runs("backfil")


def test_by_tenths_splits_a_run_at_its_writes_and_compares_the_whole_with_the_first_tenth():
    from benchmarks.bench import by_tenths

    # 10,000 leads at 1 ms of CPU and 2 ms of wall each for the first 1,000, then 1.5 and 3; written
    # in bursts at the change and every 700 leads after it, each burst seen again a moment later (the
    # count still), so the later marks fall between two bursts
    def at(done: int) -> tuple[float, float, int]:
        slow = max(0, done - 1000)
        return (2 * (done - slow) + 3 * slow) / 1000, (done - slow + 1.5 * slow) / 1000, done

    ends = [at(d) for d in [0, *range(1000, 10_000, 700), 10_000]]
    samples = [sample for end, later in zip(ends, ends[1:]) for sample in (end, (later[0] - 0.1, later[1] - 0.1, end[2]))]
    samples.append(ends[-1])
    tenths = by_tenths(samples)
    assert tenths["leads_per_tenth"] == 1000
    assert tenths["cpu_ms_per_lead"] == [1.0] + [1.5] * 9 and tenths["wall_ms_per_lead"] == [2.0] + [3.0] * 9
    assert tenths["cpu_whole_over_first_tenth"] == 1.45 and tenths["wall_whole_over_first_tenth"] == 1.45
    assert by_tenths([at(0), at(999)]) is None  # under 100 leads a tenth

    # 1 ms a lead throughout, but written in bursts of 4,000 (two pipeline pages) every 4 s, each
    # seen over two samples (1,900, then the rest 0.5 s later), sampled every 0.5 s in between: the
    # count is taken to rise evenly from one burst's end to the next's, so every tenth costs the same
    def burst(t: float) -> tuple[float, float, int]:
        done = 4000 * (t // 4) + (1900 if t % 4 == 3.5 else 0)
        return t, t, int(done)

    bursts = [burst(k / 2) for k in range(0, 25)]  # 12,000 leads in 12 s
    assert by_tenths(bursts)["cpu_ms_per_lead"] == [1.0] * 10


def test_headline_carries_the_incremental_and_no_change_calls():
    from benchmarks.bench import headline

    result = {"runs": {"backfill": {"cpu_ms_per_lead": 1.0, "leads_per_second": 900.0},
                       "incremental": {"api_calls": 34, "minimum_calls": {"read": 1, "total": 14}},
                       "no_change": {"api_calls": 2, "minimum_calls": {"read": 1, "total": 1}}}}
    assert headline(result) == {"cpu_ms_per_lead": 1.0, "leads_per_s": 900.0, "incremental_calls": 34,
                                "incremental_min_calls": 14, "nochange_calls": 2}
    assert headline({"runs": {"backfill": {}}})["nochange_calls"] is None
