"""Out-of-range weights are refused with the file and key; ``leadflow explain`` shows a lead's warnings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from leadflow.cli import app
from scoring.model import DEFAULT_MODEL_PATH
from scoring.schema import ModelFileError, parse_model_file
from scoring_leads import clinic_manager, patient_inquiry

runner = CliRunner()
NOW_ARG = "2026-11-25T15:00:00Z"


def _model() -> dict:
    return yaml.safe_load(DEFAULT_MODEL_PATH.read_text())


@pytest.mark.parametrize("path, value", [
    (("segments", "payer", "weights", "fit"), 300),
    (("segments", "patient", "weights", "engagement"), 101),
    (("segments", "pharma", "weights", "need"), -1),
    (("fit_components", "size"), 250),
    (("segments", "payer", "thresholds", "mql_fit"), 140),
])
def test_out_of_range_numbers_name_the_file_and_key(path, value):
    data = _model()
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ModelFileError) as caught:
        parse_model_file(data, "custom.yaml")
    assert caught.value.path == "custom.yaml" and caught.value.key == ".".join(path)
    assert f"out of range: {value}" in caught.value.problem


def test_weights_at_the_ends_of_the_range_load():
    data = _model()
    data["segments"]["payer"]["weights"] = {"fit": 100, "need": 0}
    parse_model_file(data, "custom.yaml")


def _leads(tmp_path: Path, leads: list[dict]) -> Path:
    path = tmp_path / "leads.json"
    path.write_text(json.dumps(leads))
    return path


def test_explain_prints_each_leads_warnings(tmp_path):
    b2b = clinic_manager().model_dump(mode="json") | {"org_type": "spaceship", "timeline": "someday maybe"}
    path = _leads(tmp_path, [b2b])
    result = runner.invoke(app, ["explain", "--lead-file", str(path), "--now", NOW_ARG])
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert "Warnings (2):" in text
    assert "org_type: unknown value 'spaceship' read as other" in text
    assert "timeline: unknown value 'someday maybe' read as unknown" in text
    result = runner.invoke(app, ["explain", "--lead-file", str(path), "--now", NOW_ARG, "--json"])
    [item] = json.loads(result.stdout)
    assert len(item["warnings"]) == 2


def test_a_patient_leads_warnings_never_show_the_value(tmp_path):
    words = "my daughter has seizures at night"
    patient = patient_inquiry().model_dump(mode="json") | {"source": words}
    result = runner.invoke(app, ["explain", "--lead-file", str(_leads(tmp_path, [patient])), "--now", NOW_ARG,
                                 "--json"])
    assert result.exit_code == 0, result.output
    [item] = json.loads(result.stdout)
    assert item["warnings"] == [f"source: unknown value text of {len(words)} characters read as other"]
    assert words not in result.output


def test_a_lead_without_warnings_prints_none(tmp_path):
    path = _leads(tmp_path, [clinic_manager().model_dump(mode="json")])
    result = runner.invoke(app, ["explain", "--lead-file", str(path), "--now", NOW_ARG])
    assert result.exit_code == 0 and "Warnings" not in result.stdout
