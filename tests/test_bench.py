"""``leadflow bench``: the minimum-call arithmetic, and a small end-to-end measurement (slow)."""

from __future__ import annotations

import pytest

from benchmarks.bench import minimum_calls, run_in_fresh_process


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
    result = run_in_fresh_process("hubspot", 200, None, 20, 42, timeout=120)
    assert result["crm"] == "hubspot" and result["leads"] == 200
    assert set(result["runs"]) == {"backfill", "incremental", "no_change"}
    for name, run in result["runs"].items():
        for key in ("wall_seconds", "leads_per_second", "cpu_ms_per_lead", "peak_rss_mb", "api_calls",
                    "api_calls_by_endpoint", "minimum_calls", "calls_over_minimum", "http_429", "failures_surfaced"):
            assert key in run, (name, key)
        assert run["api_calls"] == sum(run["api_calls_by_endpoint"].values())
        assert run["calls_over_minimum"] == round(run["api_calls"] / run["minimum_calls"]["total"], 3)
        assert run["http_429"] == 0 and run["failures_surfaced"] == 0
    backfill = result["runs"]["backfill"]
    assert backfill["leads_read"] == 200 and backfill["summary"]["changed"] > 0
    assert backfill["minimum_calls"]["read"] == 2  # 200 leads at 100 per list page
    assert backfill["calls_over_minimum"] >= 1.0
    assert result["runs"]["incremental"]["summary"]["read"] >= 20
    assert result["runs"]["no_change"]["api_calls"] <= 2
    assert result["peak_rss_mb"] > 0 and "no_change_le_2_calls" in result["targets"]
