"""The feedback loop on seeded histories with known effects (sandbox/README.md, "Histories"): one
Salesforce run through the real pipeline and the real client, then the report ranks the channels
in the seeded order, finds the stall criterion, flags a too-small sample, and a backtest of a
candidate that raises one gate moves exactly the leads that gate affects."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.pipeline import process_page
from flows.report import backtest, lead_records, report_data, write_candidate, write_report
from flows.sync import _context
from leadflow.cli import app
from sandbox import start_sandbox
from sandbox.environment import environment, sandbox_environment
from sandbox.seed import CHANNEL
from scoring.feedback import MIN_SAMPLE, brier_score, build_report, wilson_interval
from state.outcomes import lead_facts
from state.schema import make_engine

LEADS = 3000
HS_GATE = {"path": ["segments", "health_system", "thresholds", "mql_fit"], "to": 75}


@pytest.fixture(scope="module")
def synced(tmp_path_factory):
    folder = tmp_path_factory.mktemp("feedback")
    url = f"sqlite:///{folder / 'state.db'}"
    with start_sandbox(LEADS, random_seed=7) as handle:
        env = {**sandbox_environment(handle), "LEADFLOW_DATABASE_URL": url, "LEADFLOW_HOME": str(folder)}
        with environment(env):
            engine = make_engine(url)
            ctx = _context("salesforce", "sync_leads", "run-feedback", False, engine)
            for page in ctx.connector.iter_pages(None, None):
                process_page(ctx, page)
            report = report_data(engine, "salesforce", model=ctx.model, now=ctx.now + timedelta(days=31))
            yield {"env": env, "engine": engine, "ctx": ctx, "report": report, "folder": folder, "handle": handle}
            engine.dispose()


def test_wilson_interval_and_brier_score_match_known_values():
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(81, 263) == pytest.approx((0.2553, 0.3662), abs=1e-4)
    assert brier_score([(0.7, True), (0.2, False), (0.9, False)]) == pytest.approx(0.94 / 3)
    assert brier_score([]) is None


def _spearman(xs: list[float], ys: list[float]) -> float:
    def ranks(values):
        order = sorted(range(len(values)), key=lambda i: values[i])
        out = [0.0] * len(values)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
                j += 1
            for k in range(i, j + 1):
                out[order[k]] = (i + j) / 2
            i = j + 1
        return out
    rx, ry = ranks(xs), ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    return cov / (sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry)) ** 0.5


def test_the_report_ranks_the_channels_in_the_seeded_order(synced):
    channels = synced["report"]["channels"]
    assert {"source", "leads", "sql_rate", "opportunity_rate", "won_rate", "ci_low", "ci_high"} <= set(channels[0])
    ranked = [row["source"] for row in channels]
    assert set(ranked) == set(CHANNEL)
    # best first: the report's order agrees with the seeded channel strength
    assert _spearman([-i for i in range(len(ranked))], [CHANNEL[s] for s in ranked]) >= 0.7
    assert all(CHANNEL[s] >= 0.6 for s in ranked[:3]), ranked
    assert all(CHANNEL[s] <= 0.25 for s in ranked[-3:]), ranked
    over_time = synced["report"]["channels_over_time"]
    for row in channels:
        assert sum(q["n"] for q in over_time[row["source"]].values()) == row["leads"]
        assert row["ci_low"] <= row["won_rate"] <= row["ci_high"]
        assert row["opportunity_ci_low"] <= row["opportunity_rate"] <= row["opportunity_ci_high"]


def test_the_report_finds_the_seeded_stall_criterion_and_the_traits_that_move_leads(synced):
    stalls = synced["report"]["stalls"]
    mql = stalls["by_stage"]["mql"]
    assert mql["stalled"] >= MIN_SAMPLE and mql["enough_data"]
    # the seed confirms discovery on 15% of leads only; SQL needs the timeline confirmed AND known,
    # so the timeline is the criterion stalled MQLs most often lack
    assert mql["most_unmet"] == "timeline"
    assert mql["unmet"][0]["share"] > 0.9
    top = stalls["traits"][0]
    # meetings and opportunities follow fit (segment), authority (decision role) and channel by design
    assert (top["trait"], top["value"]) in {("fit", "high"), ("authority", "high"), ("segment", "health_system"),
                                            ("decision_role", "decision_maker"), ("fit", "low"), ("authority", "low")}
    assert (top["share_moved"] > top["share_stalled"]) == (top["value"] != "low")


def test_funnel_and_calibration_come_with_intervals_and_sample_sizes(synced):
    report = synced["report"]
    overall = report["funnel"]["overall"]
    assert [s["step"] for s in overall] == ["inquiry", "mql", "sal", "sql", "opportunity", "won"]
    assert overall[0]["leads"] == LEADS
    for before, step in zip(overall, overall[1:]):
        assert step["n"] == before["leads"] and step["k"] == step["leads"] <= before["leads"]
        assert step["ci_low"] <= step["rate"] <= step["ci_high"]
    assert 30 <= overall[5]["median_days"] <= 120  # the seed closes deals 30-120 days after they open
    # a first run dates leadflow's SQLs at the run, after the CRM's older opportunities: reached by then
    assert overall[4]["median_days"] == 0
    assert set(report["funnel"]["by_source"]) == set(CHANNEL)
    cal = report["calibration"]
    assert len(cal["deciles"]) == 10 and sum(d["n"] for d in cal["deciles"]) == LEADS
    assert 0 < cal["brier"] < 1
    mql_gate = next(g for g in cal["gates"] if g["gate"] == "mql")
    assert mql_gate["separates"]  # leadflow's MQLs reach an opportunity more often than the rest


def test_a_too_small_sample_is_flagged_with_a_plain_warning(synced):
    ctx = synced["ctx"]
    few = lead_records(synced["engine"], "salesforce")[:40]
    report = build_report(few, ctx.model, ctx.now + timedelta(days=31))
    assert all(not row["enough_data"] for row in report["channels"])
    assert report["suggestions"], "a small sample still gets suggestions, marked as such"
    for s in report["suggestions"]:
        assert {"change", "evidence", "n", "enough_data"} <= set(s)
        if s["n"] < MIN_SAMPLE:
            assert not s["enough_data"] and s["warning"].startswith("too little evidence to act on")
    full = synced["report"]["suggestions"]
    assert any(s["enough_data"] for s in full) and all(s.get("warning") is None for s in full if s["enough_data"])


def test_a_candidate_that_raises_one_gate_moves_exactly_the_leads_that_gate_affects(synced, tmp_path):
    candidate = write_candidate(HS_GATE, tmp_path / "candidate.yaml")
    requests_before = sum(synced["handle"].stats()["endpoints"].get(name, {}).get("200", 0)
                          for name in synced["handle"].stats()["endpoints"] if "update" in name or "create" in name)
    with environment(synced["env"]):
        result = backtest("salesforce", candidate)
    facts = lead_facts(synced["engine"], "salesforce")
    affected = {i for i, f in facts.items() if f["segment"] == "health_system" and f["stage"] == "mql"
                and 65 <= f["fit_score"] < 75}
    assert affected, "the seed has health-system MQLs with a fit between the old and the new gate"
    assert {m["crm_id"] for m in result["moved"]} == affected
    assert {(m["from"], m["to"]) for m in result["moved"]} == {("mql", "nurture")}
    assert result["migration"]["mql"]["nurture"] == len(affected)
    assert result["tasks_closed"] == len(affected) and result["tasks_created"] == 0
    assert set(result) >= {"migration", "tasks_created", "tasks_closed", "calibration_current", "calibration_candidate"}
    assert result["calibration_current"]["leads"] == result["calibration_candidate"]["leads"] == LEADS
    requests_after = sum(synced["handle"].stats()["endpoints"].get(name, {}).get("200", 0)
                         for name in synced["handle"].stats()["endpoints"] if "update" in name or "create" in name)
    assert requests_after == requests_before  # a backtest writes nothing to the CRM


def test_model_backtest_cli_prints_the_json_keys(synced, tmp_path):
    candidate = write_candidate(HS_GATE, tmp_path / "candidate.yaml")
    with environment({**synced["env"], "COLUMNS": "200"}):
        result = CliRunner().invoke(app, ["model", "backtest", "--crm", "salesforce", "--model", str(candidate), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["tasks_closed"] == len(data["moved"]) > 0 and data["model_candidate"].endswith("-candidate")


def test_the_report_files_are_self_contained_and_a_suggestion_becomes_a_candidate(synced, tmp_path):
    report = json.loads(json.dumps(synced["report"], default=str))
    report["suggestions"].append({"change": "raise the MQL fit gate", "evidence": "test", "n": 100,
                                  "enough_data": True, "edit": HS_GATE})
    files = write_report(report, tmp_path)
    html = Path(files["html"]).read_text()
    for chart in ("chart-funnel", "chart-channels", "chart-calibration", "chart-stalls"):
        assert f'id="{chart}"' in html
    lowered = html.lower()
    assert "<script" not in lowered and "src=" not in lowered and "href=" not in lowered and "url(" not in lowered
    assert "http://" not in lowered.replace('xmlns="http://www.w3.org/2000/svg"', "")
    candidate = tmp_path / f"candidate-{len(report['suggestions'])}.yaml"
    assert candidate.exists() and "mql_fit: 75" in candidate.read_text()
    assert json.loads(Path(files["json"]).read_text())["suggestions"][-1]["candidate_file"] == str(candidate)


@pytest.mark.prefect
def test_leadflow_report_runs_the_flow_publishes_the_artifact_and_writes_the_html(synced, prefect_server, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with environment({**synced["env"], "COLUMNS": "200"}):
        result = CliRunner().invoke(app, ["report", "--crm", "salesforce", "--json", "--quiet", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert {"funnel", "channels", "calibration", "stalls", "suggestions"} <= set(data)
    assert {"deciles", "brier"} <= set(data["calibration"])
    assert [row["source"] for row in data["channels"]] == [row["source"] for row in synced["report"]["channels"]]
    assert Path(data["files"]["html"]).exists() and (tmp_path / "report.json").exists()
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=["salesforce-qualification-report"])))
    assert found and "## Channels (by opportunity rate)" in found[0].data
    assert f"| {data['channels'][0]['source']} | {data['channels'][0]['leads']} |" in found[0].data
    with environment({**synced["env"], "COLUMNS": "200"}):
        shown = CliRunner().invoke(app, ["report", "--crm", "salesforce", "--quiet", "--out", str(tmp_path / "again")])
    assert shown.exit_code == 0, shown.output
    assert "## Funnel" in shown.output and shown.output.rstrip().endswith(str(tmp_path / "again" / "report.html"))


def test_the_facts_kept_for_the_report_hold_no_patient_detail(synced):
    facts = lead_facts(synced["engine"], "salesforce")
    patients = [f for f in facts.values() if f["segment"] == "patient"]
    assert patients, "the seed has patient inquiries"
    assert all(f["traits"] == {} and f["campaign"] is None and f["unmet"] == [] for f in patients)
    b2b = [f for f in facts.values() if f["segment"] != "patient"]
    assert all(set(f["traits"]) <= {"decision_role", "security_review", "baa_status", "timeline", "budget_status"}
               for f in b2b)


def test_the_window_selects_leads_by_their_inquiry(synced):
    ctx = synced["ctx"]
    everyone = lead_records(synced["engine"], "salesforce")
    firsts = sorted(r.reached["inquiry"] for r in everyone)
    middle = firsts[len(firsts) // 2]
    later = lead_records(synced["engine"], "salesforce", since=middle)
    earlier = lead_records(synced["engine"], "salesforce", until=middle)
    assert len(later) + len(earlier) == len(everyone) and later and earlier
    assert all(r.reached["inquiry"] >= middle for r in later)
    assert report_data(synced["engine"], "salesforce", since=ctx.now + timedelta(days=1), model=ctx.model)["leads"] == 0


def test_a_dry_run_keeps_no_lead_facts(tmp_path):
    url = f"sqlite:///{tmp_path / 'state.db'}"
    with start_sandbox(30, random_seed=3) as handle:
        env = {**sandbox_environment(handle), "LEADFLOW_DATABASE_URL": url, "LEADFLOW_HOME": str(tmp_path)}
        with environment(env):
            engine = make_engine(url)
            ctx = _context("salesforce", "sync_leads", "run-dry", True, engine)
            for page in ctx.connector.iter_pages(None, None):
                process_page(ctx, page)
            assert lead_facts(engine, "salesforce") == {}
            engine.dispose()


def test_an_empty_window_renders_a_report_that_says_so(tmp_path):
    from datetime import datetime, timezone

    from flows.report_html import render_html, render_markdown
    from scoring import load_model

    report = build_report([], load_model(), datetime(2026, 12, 1, tzinfo=timezone.utc))
    assert report["leads"] == 0 and report["channels"] == [] and report["calibration"]["brier"] is None
    assert "0 leads" in render_markdown(report) and "no stalled leads" in render_html(report)
