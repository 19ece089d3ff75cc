"""The feedback loop's flows: ``qualification_report`` (the funnel by channel, calibration, stalls and
suggested model changes, from leadflow's stage history and the CRM outcomes) and ``backtest`` (the
leads of a window replayed under today's model and a candidate, with no CRM writes).

They only compose: the queries are ``state.outcomes``' (``funnel``, ``lead_facts``), the statistics
``scoring.feedback``'s, the rendering ``flows.report_html``'s.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from prefect import flow
from prefect.artifacts import create_markdown_artifact

from leadflow import settings
from scoring.feedback import (
    MIN_SAMPLE,
    LeadRecord,
    Replayed,
    apply_edit,
    backtest as compare_models,
    build_report,
    lead_record,
)
from state.outcomes import funnel, lead_facts
from state.schema import engine_for

DEFAULT_STALL_DAYS = 30.0


def in_window(record: LeadRecord, since: datetime | None, until: datetime | None) -> bool:
    """A lead belongs to the window its first known date (its inquiry) falls in."""
    first = record.reached.get("inquiry")
    if first is None:
        return since is None and until is None
    return (since is None or first >= since) and (until is None or first < until)


def lead_records(engine: Any, crm: str, since: datetime | None = None,
                 until: datetime | None = None) -> list[LeadRecord]:
    """Every lead of the window with its path and facts (B2B and patient alike)."""
    journeys = funnel(engine, crm)
    facts = lead_facts(engine, crm)
    records = [lead_record(journey, facts.get(crm_id)) for crm_id, journey in journeys.items()]
    return [r for r in records if in_window(r, since, until)]


def report_data(engine: Any, crm: str, since: datetime | None = None, until: datetime | None = None, *,
                model: Any = None, now: datetime | None = None, stall_days: float = DEFAULT_STALL_DAYS,
                min_n: int = MIN_SAMPLE) -> dict[str, Any]:
    """The report as plain data (what ``leadflow report --json`` prints)."""
    from scoring import load_model

    model = model or load_model(settings.model_path())
    now = now or until or datetime.now(timezone.utc)
    report = build_report(lead_records(engine, crm, since, until), model, now, stall_days=stall_days, min_n=min_n)
    report.update({"crm": crm, "since": since.isoformat() if since else None,
                   "until": until.isoformat() if until else None, "generated_at": now.isoformat(),
                   "model_version": model.version})
    return report


def write_report(report: dict[str, Any], out_dir: Path, model_path: Path | None = None) -> dict[str, str]:
    """report.json, report.md, report.html and one candidate model file per suggestion with a
    model edit (``candidate-N.yaml``, N its position in ``suggestions``) into ``out_dir``."""
    from flows.report_html import render_html, render_markdown

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "report.json", "markdown": out_dir / "report.md", "html": out_dir / "report.html"}
    paths["json"].write_text(json.dumps(report, indent=2, default=str))
    paths["markdown"].write_text(render_markdown(report))
    paths["html"].write_text(render_html(report))
    for index, suggestion in enumerate(report["suggestions"], start=1):
        if suggestion.get("edit"):
            candidate = out_dir / f"candidate-{index}.yaml"
            write_candidate(suggestion["edit"], candidate, model_path)
            suggestion["candidate_file"] = str(candidate)
    paths["json"].write_text(json.dumps(report, indent=2, default=str))
    return {kind: str(path) for kind, path in paths.items()}


def write_candidate(edit: dict[str, Any], target: Path, model_path: Path | None = None) -> Path:
    """Today's model file with one suggestion's edit applied, validated as a model file."""
    from scoring import DEFAULT_MODEL_PATH, load_model

    source = Path(model_path or settings.model_path() or DEFAULT_MODEL_PATH)
    spec = apply_edit(yaml.safe_load(source.read_text()), edit)
    target.write_text("# candidate model written by `leadflow report` from a suggestion:\n"
                      f"# {'.'.join(edit['path'])} -> {edit.get('to', '+' + str(edit.get('by')))}\n"
                      + yaml.safe_dump(spec, sort_keys=False))
    load_model(target)
    return target


@flow(name="qualification-report", log_prints=False)
def qualification_report(crm: str, since: datetime | None = None, until: datetime | None = None,
                         stall_days: float = DEFAULT_STALL_DAYS, out_dir: str | None = None) -> dict[str, Any]:
    """The qualification report of ``crm`` for leads whose inquiry falls in [since, until):
    published as a Prefect markdown artifact (the headline tables) and, with ``out_dir``, written
    as JSON, markdown, a self-contained HTML file and candidate model files."""
    from flows.report_html import render_markdown

    engine = engine_for(settings.database_url())
    report = report_data(engine, crm, since, until, stall_days=stall_days)
    if out_dir:
        report["files"] = write_report(report, Path(out_dir))
    create_markdown_artifact(key=f"{crm}-qualification-report", markdown=render_markdown(report),
                             description=f"{crm}: funnel, channels, calibration, stalls, suggestions")
    return report


# --------------------------------------------------------------------------- backtest


def replay(leads: Sequence[Any], model: Any, now: datetime, members: Sequence[Any] = ()) -> list[Replayed]:
    """Each lead qualified as if for the first time (no previous stage; what sales accepted or set
    by hand is kept), so that two models are compared on the same inputs."""
    from scoring import qualify_batch

    fresh = [lead.model_copy(update={"stage": None}) for lead in leads]
    return [Replayed(q.crm_id, q.stage.value, q.lead_score, lead.manual_stage is not None)
            for lead, q in zip(fresh, qualify_batch(fresh, now, model, members))]


def read_window_leads(crm: str, crm_ids: Sequence[str], engine: Any, enrich: bool = True) -> tuple[list[Any], Any]:
    """The leads re-read by id through the connector (reads only: no read marks, no outcomes
    written), enriched as a run would (from the enrichment cache where it holds them)."""
    from connectors.enrichment.waterfall import build_waterfall
    from connectors.crm.factory import connector_from_env

    connector = connector_from_env(crm, engine=engine, mark_reads=False)
    leads = [lead for page in connector.fetch_by_ids(list(crm_ids)) for lead in page.leads]
    if enrich and leads:
        now = datetime.now(timezone.utc)
        leads = [o.lead for o in build_waterfall(engine=engine).enrich_batch(leads, now)]
    return leads, connector


def backtest(crm: str, candidate_path: Path, since: datetime | None = None, until: datetime | None = None, *,
             now: datetime | None = None, enrich: bool = True) -> dict[str, Any]:
    """Today's model and the candidate on the leads of the window (no CRM writes): the stage
    migration matrix, the tasks that would be created or closed, each model's calibration."""
    from scoring import load_model
    from state.orgs import known_members

    engine = engine_for(settings.database_url())
    current_model = load_model(settings.model_path())
    candidate_model = load_model(candidate_path)
    records = lead_records(engine, crm, since, until)
    outcomes = {r.crm_id: r.has("opportunity") for r in records}
    leads, _connector = read_window_leads(crm, [r.crm_id for r in records], engine, enrich)
    now = now or datetime.now(timezone.utc)
    members = known_members(engine, crm, leads, remember=False)
    result = compare_models(replay(leads, current_model, now, members), replay(leads, candidate_model, now, members),
                            outcomes)
    result.update({"crm": crm, "model_current": current_model.version, "model_candidate": candidate_model.version,
                   "since": since.isoformat() if since else None, "until": until.isoformat() if until else None})
    return result
