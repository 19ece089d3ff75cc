"""The model file is validated on load: each kind of mistake is a clear error naming file and key."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from scoring import DEFAULT_MODEL_PATH, ModelFileError, load_model
from scoring.schema import parse_model_file

RAW = yaml.safe_load(DEFAULT_MODEL_PATH.read_text())
FILE = "scoring/default_model.yaml"


def error_for(change: Callable[[dict[str, Any]], None]) -> ModelFileError:
    data = copy.deepcopy(RAW)
    change(data)
    with pytest.raises(ModelFileError) as info:
        parse_model_file(data, FILE)
    return info.value


def test_default_model_loads_and_is_cached():
    model = load_model()
    assert model is load_model() is load_model(DEFAULT_MODEL_PATH)
    assert model.version and model.source_path == FILE
    assert set(model.segments) == {"health_system", "practice_single", "practice_multi", "payer", "pharma",
                                   "digital_health", "unknown"}


def test_unknown_criterion():
    err = error_for(lambda d: d["segments"]["payer"]["weights"].update(fitt=10))
    assert str(err).startswith(f"{FILE}: segments.payer.weights.fitt: unknown criterion 'fitt'")
    assert err.path == FILE and err.key == "segments.payer.weights.fitt"


def test_non_numeric_weight():
    err = error_for(lambda d: d["segments"]["pharma"]["weights"].update(fit="heavy"))
    assert str(err) == f"{FILE}: segments.pharma.weights.fit: not a number: 'heavy'"


def test_threshold_out_of_range():
    err = error_for(lambda d: d["segments"]["health_system"]["thresholds"].update(mql_fit=140))
    assert err.key == "segments.health_system.thresholds.mql_fit"
    assert "out of range: 140" in str(err) and "100" in str(err)


def test_stage_without_a_next_step():
    err = error_for(lambda d: d["next_steps"].pop("sql"))
    assert str(err) == f"{FILE}: next_steps.sql: stage 'sql' has no next step (every stage needs one)"


def test_segment_missing():
    err = error_for(lambda d: d["segments"].pop("payer"))
    assert err.key == "segments.payer" and "segment 'payer' is missing" in str(err)


def test_unknown_segment_name():
    err = error_for(lambda d: d["segments"].update(vet_clinic=d["segments"]["payer"]))
    assert err.key == "segments.vet_clinic" and "unknown segment 'vet_clinic'" in str(err)


def test_unknown_priority_need():
    err = error_for(lambda d: d["segments"]["payer"]["profile"].update(priority_needs=["world_peace"]))
    assert err.key == "segments.payer.profile.priority_needs" and "unknown need 'world_peace'" in str(err)


def test_bad_due_rule_and_placeholder():
    err = error_for(lambda d: d["next_steps"]["mql"].update(due={"business_days": 2, "hours": 4}))
    assert err.key == "next_steps.mql.due" and "exactly one of business_days or hours" in str(err)
    err = error_for(lambda d: d["next_steps"]["mql"].update(body="Why: {reason}"))
    assert err.key == "next_steps.mql.body" and "unknown placeholder {reason}" in str(err)


def test_unknown_backward_rule_condition():
    err = error_for(lambda d: d["backward_rules"].append({"from": ["sql"], "to": "inquiry", "when": "bored"}))
    assert err.key.startswith("backward_rules.3.when") and "'bored'" in str(err)


def test_all_zero_weights():
    zero = {name: 0 for name in ("fit", "need", "authority", "budget", "timeline", "compliance", "engagement")}
    err = error_for(lambda d: d["segments"]["pharma"].update(weights=zero))
    assert err.key == "segments.pharma.weights" and "at least one criterion" in str(err)


def test_patient_weights_are_fit_and_engagement_only():
    err = error_for(lambda d: d["segments"]["patient"]["weights"].update(budget=10))
    assert str(err) == f"{FILE}: segments.patient.weights.budget: patients are scored on fit and engagement only"


def test_load_model_reports_file_problems(tmp_path: Path):
    broken = tmp_path / "model.yaml"
    broken.write_text("version: [unclosed\n")
    with pytest.raises(ModelFileError, match=rf"{broken}: not valid YAML"):
        load_model(broken)
    with pytest.raises(ModelFileError, match="cannot read the model file"):
        load_model(tmp_path / "missing.yaml")
    edited = copy.deepcopy(RAW)
    edited["segments"]["payer"]["weights"]["fitt"] = 1
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(edited))
    with pytest.raises(ModelFileError, match=rf"^{bad}: segments.payer.weights.fitt: unknown criterion 'fitt'"):
        load_model(bad)


def test_a_custom_model_file_changes_behaviour(tmp_path: Path):
    edited = copy.deepcopy(RAW)
    edited["version"] = "custom-1"
    edited["next_steps"]["mql"]["subject"] = "Call within 1 business day"
    path = tmp_path / "custom.yaml"
    path.write_text(yaml.safe_dump(edited))
    model = load_model(path)
    assert model.version == "custom-1"
    assert model.segments["payer"].next_steps["mql"].subject == "Call within 1 business day"
