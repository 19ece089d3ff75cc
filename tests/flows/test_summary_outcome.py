"""A run's outcome, from its counts: what the exit code, the printed summary and the artifacts say."""

from __future__ import annotations

import pytest

from flows.summary import RunSummary
from leadflow.errors import OUTCOME_EXIT_CODES


def _summary(**counts) -> RunSummary:
    return RunSummary(crm="hubspot", flow="sync_leads", run_id="r1", **counts)


@pytest.mark.parametrize("counts, outcome, code", [
    ({"read": 10, "changed": 10}, "success", 0),
    ({"read": 0}, "success", 0),
    ({"read": 10, "changed": 9, "failed": 1}, "partial", 3),
    ({"read": 10, "changed": 9, "quarantined": 1}, "partial", 3),
    ({"read": 10, "failed": 10}, "failed", 1),
    ({"read": 10, "failed": 1, "stopped_early": "daily API limit reached"}, "stopped_early", 4),
])
def test_outcome_and_its_exit_code(counts, outcome, code):
    summary = _summary(**counts)
    assert summary.outcome == outcome and summary.as_dict()["outcome"] == outcome
    assert OUTCOME_EXIT_CODES[outcome] == code
    assert {"metric": "outcome", "value": outcome} in summary.table()
    assert f"**Outcome:** {outcome.replace('_', ' ')}" in summary.markdown()
