"""Qualification policy for tasks (scoring/tasks.py): which stages get one, the key, the manual rule."""

from __future__ import annotations

from datetime import datetime, timezone

from scoring import NextStep
from scoring.tasks import TASK_STAGES, lead_of_task_key, next_task, stage_task_prefix, superseded_prefixes, task_key

NOW = datetime(2026, 12, 1, 9, tzinfo=timezone.utc)
STEP = NextStep(id="call-24h", subject="Call", body="why", priority="high", hours=24)


def test_a_task_stage_set_by_leadflow_gets_a_task_with_its_key():
    task = next_task("00Q1", "mql", None, STEP, NOW)
    assert task is not None and task.key == "00Q1:mql:call-24h" == task_key("00Q1", "mql", "call-24h")
    assert lead_of_task_key(task.key) == "00Q1" and task.key.startswith(stage_task_prefix("00Q1", "mql"))
    assert task.due.isoformat() == "2026-12-02" and task.priority == "high"


def test_a_stage_set_by_hand_gets_no_task():
    assert next_task("00Q1", "mql", "mql", STEP, NOW) is None
    assert next_task("00Q1", "sql", "disqualified", STEP, NOW) is None


def test_stages_without_a_person_step_get_no_task():
    assert "nurture" not in TASK_STAGES and next_task("00Q1", "nurture", None, STEP, NOW) is None
    assert "inquiry" not in TASK_STAGES


def test_a_stage_move_supersedes_the_previous_stage_tasks_only():
    assert superseded_prefixes("00Q1", "mql", True) == ["00Q1:mql:"]
    assert superseded_prefixes("00Q1", "mql", False) == []
    assert superseded_prefixes("00Q1", None, True) == []
