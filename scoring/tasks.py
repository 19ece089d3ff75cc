"""Qualification policy for next-step tasks: which stages get one, its idempotency key, and the
rule that a stage set by hand gets no new task. Pure functions over plain values.

A task key is ``f"{crm_id}:{stage}:{next_step_id}"``: one task per lead, stage and step, whatever
the number of runs. The key is the CRM-side unique value tasks are upserted on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from scoring.next_steps import NextStep

# Stages whose next step is a task for a person (the others are handled by nurture programmes).
TASK_STAGES = frozenset({"mql", "sql", "intake_ready", "redirect", "disqualified"})
KEY_SEPARATOR = ":"


@dataclass(frozen=True)
class PlannedTask:
    """The next-step task a qualified lead calls for."""

    key: str
    crm_id: str
    stage: str
    subject: str
    body: str
    due: date
    priority: str  # high | normal | low


def task_key(crm_id: str, stage: str, step_id: str) -> str:
    return KEY_SEPARATOR.join((crm_id, stage, step_id))


def lead_of_task_key(key: str) -> str:
    """The lead id a task key belongs to."""
    return key.split(KEY_SEPARATOR, 1)[0]


def stage_task_prefix(crm_id: str, stage: str) -> str:
    """The prefix every task key of ``stage`` on that lead starts with (for superseding)."""
    return f"{crm_id}{KEY_SEPARATOR}{stage}{KEY_SEPARATOR}"


def wants_task(stage: str, manual_stage: str | None, task_stages: frozenset[str] = TASK_STAGES) -> bool:
    """A stage gets a task only when leadflow set it: a stage set by hand is sales' own call."""
    return stage in task_stages and manual_stage is None


def next_task(crm_id: str, stage: str, manual_stage: str | None, step: NextStep, now: datetime,
              task_stages: frozenset[str] = TASK_STAGES) -> PlannedTask | None:
    """The task for this lead's stage and next step, or None when the stage calls for none."""
    if not wants_task(stage, manual_stage, task_stages):
        return None
    return PlannedTask(key=task_key(crm_id, stage, step.id), crm_id=crm_id, stage=stage, subject=step.subject,
                       body=step.body, due=step.due(now), priority=step.priority)


def superseded_prefixes(crm_id: str, previous_stage: str | None, stage_changed: bool) -> list[str]:
    """Task-key prefixes a stage move replaces: the previous stage's tasks on that lead."""
    if not stage_changed or previous_stage is None:
        return []
    return [stage_task_prefix(crm_id, previous_stage)]
