"""A run's counts and the views made of them: a table and markdown for Prefect artifacts and the CLI."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any


@dataclass(kw_only=True)
class Counts:
    """What happened to leads: per page (flows.pipeline.PageResult) and per run (RunSummary)."""

    read: int = 0
    changed: int = 0
    unchanged: int = 0
    stage_moves: int = 0
    tasks_created: int = 0
    tasks_closed: int = 0
    failed: int = 0
    quarantined: int = 0

    def add(self, other: "Counts") -> None:
        for spec in fields(Counts):
            setattr(self, spec.name, getattr(self, spec.name) + getattr(other, spec.name))

    def counts(self) -> dict[str, int]:
        return {spec.name: getattr(self, spec.name) for spec in fields(Counts)}


REJECTED_SHOWN = 500  # failed or quarantined leads listed in a summary (all of them stay in lf_pending_leads)
PREVIEW_SHOWN = 1000  # dry-run preview rows in the artifact (the CSV has every row)

OUTCOME_TEXT = {
    "success": "success",
    "partial": "partial: some leads failed or were quarantined; they are retried by the next run",
    "stopped_early": "stopped early; state is saved and the next run resumes",
    "failed": "failed: no lead could be written",
}


@dataclass(kw_only=True)
class RunSummary(Counts):
    crm: str
    flow: str
    run_id: str
    dry_run: bool = False
    retried_pending: int = 0
    pages: int = 0
    stopped_early: str | None = None
    api_calls: int = 0
    api_remaining: Any = None
    enrichment: dict[str, Any] = field(default_factory=dict)
    stages: Counter = field(default_factory=Counter)
    by_source: dict[str, Counter] = field(default_factory=dict)
    by_segment: dict[str, Counter] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list)
    preview_path: str | None = None
    kept_manual: int = 0  # changes not written: a person changed the field while the run was in flight
    rejected: list[dict[str, str]] = field(default_factory=list)  # first REJECTED_SHOWN: crm_id, kind, reason
    preview: list[dict[str, Any]] = field(default_factory=list)  # dry runs: first PREVIEW_SHOWN rows

    def add_page(self, page: Any) -> None:
        """A page's (or the held tasks') counts, rejected leads and preview rows."""
        self.add(page)
        self.kept_manual += getattr(page, "kept_manual", 0)
        room = REJECTED_SHOWN - len(self.rejected)
        self.rejected.extend({"crm_id": r.crm_id, "kind": r.kind, "reason": r.reason}
                             for r in getattr(page, "rejected", [])[:max(room, 0)])
        room = PREVIEW_SHOWN - len(self.preview)
        self.preview.extend(getattr(page, "preview", [])[:max(room, 0)])

    def count_stage(self, stage: str, source: str, segment: str) -> None:
        self.stages[stage] += 1
        self.by_source.setdefault(source, Counter())[stage] += 1
        self.by_segment.setdefault(segment, Counter())[stage] += 1

    @property
    def outcome(self) -> str:
        """``stopped_early`` (quota or budget; the next run resumes), ``failed`` (every lead read
        failed to write), ``partial`` (some failed or were quarantined; retried next run), or
        ``success``. The CLI's exit code follows it (``leadflow.errors.OUTCOME_EXIT_CODES``)."""
        if self.stopped_early:
            return "stopped_early"
        if self.failed and self.failed >= self.read:
            return "failed"
        if self.failed or self.quarantined:
            return "partial"
        return "success"

    @property
    def nothing_to_do(self) -> bool:
        return self.changed == 0 and self.tasks_created == 0 and self.failed == 0 and self.quarantined == 0

    def table(self) -> list[dict[str, Any]]:
        rows = [
            ("outcome", self.outcome), ("read", self.read), ("changed", self.changed), ("unchanged", self.unchanged),
            ("stage moves", self.stage_moves), ("tasks created", self.tasks_created),
            ("tasks closed", self.tasks_closed), ("failed (retried next run)", self.failed),
            ("quarantined", self.quarantined), ("pending retried", self.retried_pending),
            ("kept manual edits", self.kept_manual),
            ("API calls", self.api_calls), ("API quota remaining", self.api_remaining),
        ]
        return [{"metric": name, "value": "" if value is None else value} for name, value in rows]

    def markdown(self) -> str:
        stages = sorted(self.stages)
        lines = [f"# leadflow {self.flow} on {self.crm}{' (dry run)' if self.dry_run else ''}", ""]
        lines += [f"**Outcome:** {OUTCOME_TEXT[self.outcome]}", ""]
        if self.stopped_early:
            lines += [f"**Stopped early:** {self.stopped_early}. State is saved; the next run resumes.", ""]
        for title, groups in (("source", self.by_source), ("segment", self.by_segment)):
            lines += [f"## Stages by {title}", "", f"| {title} | " + " | ".join(stages) + " | total |",
                      "|---" * (len(stages) + 2) + "|"]
            for name in sorted(groups):
                counts = groups[name]
                lines.append(f"| {name} | " + " | ".join(str(counts.get(s, 0)) for s in stages)
                             + f" | {sum(counts.values())} |")
            lines.append("")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "crm": self.crm, "flow": self.flow, "run_id": self.run_id, "dry_run": self.dry_run,
            "outcome": self.outcome,
            **self.counts(), "retried_pending": self.retried_pending,
            "pages": self.pages, "stopped_early": self.stopped_early, "api_calls": self.api_calls,
            "api_remaining": self.api_remaining, "enrichment": self.enrichment, "stages": dict(self.stages),
            "by_source": {k: dict(v) for k, v in self.by_source.items()},
            "by_segment": {k: dict(v) for k, v in self.by_segment.items()},
            "examples": self.examples,
            "preview_path": self.preview_path,
            "kept_manual": self.kept_manual,
            "rejected": self.rejected,
        }

    def rejected_markdown(self) -> str:
        """Failed and quarantined leads with their reasons (which never hold values)."""
        shown = len(self.rejected)
        total = self.failed + self.quarantined
        lines = [f"# Leads not written: {total}", "",
                 "Each is retried on the next run (`leadflow failures` lists them all).", "",
                 "| lead | kind | reason |", "|---|---|---|"]
        lines += [f"| {r['crm_id']} | {r['kind']} | {r['reason'].replace('|', '/')} |" for r in self.rejected]
        if total > shown:
            lines += ["", f"... and {total - shown} more."]
        return "\n".join(lines)


def print_summary(summary: dict[str, Any]) -> None:
    """A run summary (``RunSummary.as_dict()``) as the CLI prints it."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    title = f"{summary['flow']} on {summary['crm']}" + (" (dry run)" if summary["dry_run"] else "")
    table = Table(title=title)
    for column in SUMMARY_COLUMNS:
        table.add_column(column.replace("_", " "), justify="right")
    table.add_row(*(str(summary[c]) for c in SUMMARY_COLUMNS))
    console.print(table)
    outcome = summary.get("outcome", "success")
    console.print(f"[{OUTCOME_STYLE.get(outcome, 'bold')}]Outcome: {OUTCOME_TEXT.get(outcome, outcome)}[/]",
                  highlight=False)
    if summary.get("stopped_early"):
        console.print(f"[yellow]Stopped early:[/] {summary['stopped_early']} (state saved; the next run resumes)",
                      highlight=False, markup=True)
    if summary.get("preview_path"):
        console.print(f"Dry-run preview (nothing written): {summary['preview_path']}")


SUMMARY_COLUMNS = ("read", "changed", "unchanged", "stage_moves", "tasks_created", "failed", "quarantined",
                   "api_calls")
OUTCOME_STYLE = {"success": "green", "partial": "yellow", "stopped_early": "yellow", "failed": "red"}
