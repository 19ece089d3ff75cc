"""``leadflow bench`` reports the start-up to the first CRM request (benchmarks.startup)."""

from __future__ import annotations

from benchmarks import bench
from benchmarks import startup as startup_bench


def test_bench_adds_and_renders_startup_to_first_request(monkeypatch):
    monkeypatch.setattr(bench, "run_in_fresh_process", lambda *args, **kwargs: {
        "crm": "hubspot", "leads": 10, "changed": 1, "peak_rss_mb": 1.0, "runs": {}, "targets": {}})
    measured = {"no_prefect_server": {"median": 12.5, "all": [12.5]},
                "running_prefect_server": {"median": 2.1, "all": [2.1]}, "repeat": 1}
    monkeypatch.setattr(startup_bench, "measure_startup", lambda crm, repeat: measured)
    result = bench.bench("hubspot", 10, startup_repeat=1, scoring=False)
    assert result["startup_to_first_request_s"] == measured
    assert "no Prefect server 12.5 s, running Prefect server 2.1 s" in bench.render(result)
    assert "startup_to_first_request_s" not in bench.bench("hubspot", 10, startup_repeat=0, scoring=False)


def test_the_first_request_is_read_from_the_sandbox_log():
    class Handle:
        def requests(self):
            return [{"endpoint": "nppes.search", "at": 100.5}, {"endpoint": "hubspot.contacts.search", "at": 103.0},
                    {"endpoint": "hubspot.contacts.batch_read", "at": 104.0}, {"endpoint": "hubspot.x", "at": 99.0}]

    assert startup_bench._first_request_after(Handle(), "hubspot", 100.0) == 3.0
