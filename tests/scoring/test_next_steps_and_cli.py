"""Next steps (every stage in every segment, due dates) and ``leadflow explain``."""

from __future__ import annotations

import json
from datetime import date, datetime, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

from leadflow.canonical import Stage
from leadflow.cli import app
from scoring import add_business_days, due_date
from scoring_leads import clinic_manager, patient_inquiry


def test_every_stage_in_every_segment_has_a_concrete_task(model):
    for rules in [*model.segments.values(), model.patient]:
        for stage in Stage:
            step = rules.next_steps[stage.value]
            assert step.id and step.subject and "{reasons}" in step.body, (rules.name, stage)
            assert step.priority in {"high", "normal", "low"}
            assert (step.business_days is None) != (step.hours is None)


def test_named_next_steps(model):
    assert model.segments["practice_multi"].next_steps["mql"].subject == "Sales reviews and accepts within 2 business days"
    assert "security questionnaire and BAA" in model.segments["payer"].next_steps["sql"].subject
    intake = model.patient.next_steps["intake_ready"]
    assert (intake.subject, intake.hours) == ("Call to schedule intake within 24 hours", 24)


@pytest.mark.parametrize(
    ("start", "days", "expected"),
    [
        (date(2026, 11, 25), 2, date(2026, 11, 27)),  # Wed + 2 -> Fri
        (date(2026, 11, 26), 2, date(2026, 11, 30)),  # Thu + 2 -> Mon
        (date(2026, 11, 27), 1, date(2026, 11, 30)),  # Fri + 1 -> Mon
        (date(2026, 11, 28), 1, date(2026, 12, 1)),  # Sat + 1 -> Tue
        (date(2026, 11, 28), 0, date(2026, 11, 30)),  # Sat + 0 -> Mon
        (date(2026, 11, 23), 10, date(2026, 12, 7)),
    ],
)
def test_business_days_skip_weekends(start, days, expected):
    assert add_business_days(start, days) == expected


def test_due_in_hours():
    now = datetime(2026, 11, 27, 20, 0, tzinfo=timezone.utc)
    assert due_date(now, hours=24) == date(2026, 11, 28)
    assert due_date(now, business_days=2) == date(2026, 12, 1)


# --- leadflow explain --------------------------------------------------------------------------

runner = CliRunner()
NOW_ARG = "2026-11-25T15:00:00Z"


def write(tmp_path: Path, data) -> Path:
    path = tmp_path / "leads.json"
    path.write_text(json.dumps(data))
    return path


def test_explain_single_lead_json(tmp_path):
    path = write(tmp_path, clinic_manager().model_dump(mode="json"))
    result = runner.invoke(app, ["explain", "--lead-file", str(path), "--now", NOW_ARG, "--json"])
    assert result.exit_code == 0, result.output
    [item] = json.loads(result.stdout)
    assert {"crm_id", "stage", "lead_score", "fit_score", "engagement_score", "reasons", "next_step"} <= set(item)
    assert (item["crm_id"], item["stage"]) == ("c-1", "mql")
    assert item["next_step"]["subject"] == "Sales reviews and accepts within 2 business days"
    assert item["next_step"]["due"] == "2026-11-27"


def test_explain_list_json(tmp_path):
    leads = [clinic_manager().model_dump(mode="json"), patient_inquiry().model_dump(mode="json")]
    path = write(tmp_path, leads)
    result = runner.invoke(app, ["explain", "--lead-file", str(path), "--now", NOW_ARG, "--json"])
    assert result.exit_code == 0, result.output
    assert [(i["crm_id"], i["stage"]) for i in json.loads(result.stdout)] == [("c-1", "mql"), ("p-1", "intake_ready")]


def test_explain_prints_the_breakdown(tmp_path):
    path = write(tmp_path, [clinic_manager().model_dump(mode="json")])
    result = runner.invoke(app, ["explain", "--lead-file", str(path), "--now", NOW_ARG])
    assert result.exit_code == 0, result.output
    for text in ("c-1", "practice_multi", "mql", "authority", "requested a demo", "Next step:"):
        assert text in result.stdout


def test_explain_with_a_model_file_and_clear_errors(tmp_path):
    path = write(tmp_path, clinic_manager().model_dump(mode="json"))
    bad_model = tmp_path / "model.yaml"
    bad_model.write_text("version: x\n")
    result = runner.invoke(app, ["explain", "--lead-file", str(path), "--model", str(bad_model)])
    assert result.exit_code == 2 and "required key is missing" in " ".join(result.output.split())
    result = runner.invoke(app, ["explain", "--lead-file", str(path), "--now", "yesterday"])
    assert result.exit_code == 2 and "not an ISO-8601 time" in " ".join(result.output.split())
    bad_lead = write(tmp_path, [{"crm": "hubspot"}])
    result = runner.invoke(app, ["explain", "--lead-file", str(bad_lead)])
    assert result.exit_code == 2 and "lead 0: crm_id" in " ".join(result.output.split())
