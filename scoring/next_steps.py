"""Next steps: one concrete task per stage and segment, with a due date computed from ``now``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from scoring.model import StepTemplate


def add_business_days(start: date, days: int) -> date:
    """``days`` working days after ``start`` (Saturday and Sunday skipped); 0 rolls a weekend to Monday."""
    current = start
    while current.weekday() >= 5:
        current += timedelta(days=1)
    remaining = days
    while remaining > 0:
        current += timedelta(days=1)
        if current.weekday() < 5:
            remaining -= 1
    return current


def due_date(now: datetime, business_days: int | None = None, hours: int | None = None) -> date:
    """The due date of a task created at ``now``: N business days, or N hours, later."""
    if hours is not None:
        return (now + timedelta(hours=hours)).date()
    return add_business_days(now.date(), business_days or 0)


@dataclass(frozen=True)
class NextStep:
    """The task a stage calls for; ``body`` carries the reasons."""

    id: str
    subject: str
    body: str
    priority: str  # high | normal | low
    business_days: int | None = None
    hours: int | None = None

    @classmethod
    def _build(cls, **values: object) -> "NextStep":
        """Construct without the per-field ``object.__setattr__`` of a frozen dataclass (hot path)."""
        step = object.__new__(cls)
        step.__dict__.update(values)
        return step

    def due(self, now: datetime) -> date:
        return due_date(now, self.business_days, self.hours)

    @property
    def due_rule(self) -> str:
        if self.hours is not None:
            return f"within {self.hours} hours"
        return f"within {self.business_days} business days"

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "subject": self.subject,
            "body": self.body,
            "priority": self.priority,
            "due_rule": self.due_rule,
        }


def render_step(template: StepTemplate, stage: str, segment_label: str, lead_score: int, reasons: str) -> NextStep:
    values = {"reasons": reasons, "segment": segment_label, "stage": stage, "lead_score": lead_score}
    return NextStep._build(
        id=template.id,
        subject=template.subject.format_map(values) if "{" in template.subject else template.subject,
        body=template.body.format_map(values),
        priority=template.priority,
        business_days=template.business_days,
        hours=template.hours,
    )
