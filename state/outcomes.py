"""Outcomes: what happened to each lead after leadflow qualified it, kept in the state store.

Two tables (state/schema.py): ``lf_outcomes`` holds each lead's outcome as last read from the
CRM (``Lead.outcome``: lead status, lifecycle stage dates, conversion, opportunity stage, won/lost,
amount, dates), upserted by the connectors page by page (``record_outcomes``, one statement per
page); ``lf_stage_history`` is appended when a run writes a new leadflow stage
(``record_stage_moves``). ``funnel`` joins them: for every lead, when it reached each leadflow
stage and what became of it (inquiry -> MQL -> SAL -> SQL -> opportunity -> won), with dates.
``lf_lead_facts`` keeps what the last run qualified each lead on (``record_lead_facts``, one
upsert per page: source, campaign, segment, scores, unmet criteria, enumerated traits), read back
by ``lead_facts`` for the feedback report (scoring/feedback.py).

``deal_outcome`` picks the HubSpot deal that stands for a contact's outcome: a won deal, else
the newest open one, else the newest lost one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any

from sqlalchemy import Engine, select

from connectors.crm.convert import is_blank, parse_bool, parse_datetime, parse_number
from leadflow.canonical import Lead
from leadflow.clock import utc_if_datetime, utcnow
from state.schema import insert_many
from state.schema import lead_facts as facts_table
from state.schema import outcomes as outcomes_table
from state.schema import stage_history as history_table
from mappings import DealMapping

STAGE_DATE_FIELDS = ("became_lead_at", "became_mql_at", "became_sql_at", "became_opportunity_at",
                     "became_customer_at")
_OUTCOME_COLUMNS = ("crm", "crm_id", "lead_status", "lifecycle_stage", "stage_dates", "converted", "converted_at",
                    "opportunity_id", "opportunity_stage", "opportunity_closed", "opportunity_won",
                    "opportunity_amount", "opportunity_created_at", "opportunity_close_date", "read_at")
_CHUNK = 500


def _safe(parse: Any, value: Any) -> Any:
    try:
        return parse(value)
    except ValueError:
        return None


def deal_outcome(deals: DealMapping, rows: Sequence[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """The outcome fields (``Lead.outcome``) of a contact's deals, or {} when there are none."""
    candidates = []
    for deal_id, props in rows:
        won = _safe(parse_bool, props.get(deals.won_field))
        closed = _safe(parse_bool, props.get(deals.closed_field))
        created = _safe(parse_datetime, props.get(deals.created_field))
        close = _safe(parse_datetime, props.get(deals.close_date_field))
        amount = _safe(parse_number, props.get(deals.amount_field))
        rank = 2 if won else (1 if not closed else 0)
        candidates.append((rank, created or datetime.min.replace(tzinfo=timezone.utc), int(deal_id), {
            "opportunity_id": deal_id,
            "opportunity_stage": None if is_blank(props.get(deals.stage_field)) else str(props[deals.stage_field]),
            "opportunity_closed": closed,
            "opportunity_won": won,
            "opportunity_amount": amount,
            "opportunity_created_at": created,
            "opportunity_close_date": close.date() if close else None,
            "converted": True,
        }))
    if not candidates:
        return {}
    return max(candidates, key=lambda c: c[:3])[3]


def _flag(value: bool | None) -> int | None:
    return None if value is None else int(bool(value))


def _outcome_row(lead: Lead, read_at: datetime) -> tuple[Any, ...] | None:
    outcome = lead.outcome
    if outcome is None or outcome.is_empty:
        return None
    dates = {name.removeprefix("became_").removesuffix("_at"): getattr(outcome, name).isoformat()
             for name in STAGE_DATE_FIELDS if getattr(outcome, name) is not None}
    return (lead.crm.value, lead.crm_id, outcome.lead_status, outcome.lifecycle_stage, dates or None,
            _flag(outcome.converted), outcome.converted_at, outcome.opportunity_id, outcome.opportunity_stage,
            _flag(outcome.opportunity_closed), _flag(outcome.opportunity_won), outcome.opportunity_amount,
            outcome.opportunity_created_at, outcome.opportunity_close_date, read_at)


def record_outcomes(engine: Engine, crm: str, leads: Iterable[Lead], read_at: datetime | None = None) -> int:
    """Upsert the outcome of every lead that has one (one statement); returns how many."""
    read_at = read_at or utcnow()
    rows = [row for row in (_outcome_row(lead, read_at) for lead in leads) if row is not None]
    if rows:
        with engine.begin() as conn:
            insert_many(conn, outcomes_table, _OUTCOME_COLUMNS, rows, conflict_keys=("crm", "crm_id"))
    return len(rows)


@dataclass(frozen=True)
class StageMove:
    crm_id: str
    stage: str
    previous_stage: str | None


def record_stage_moves(engine: Engine, crm: str, moves: Sequence[StageMove], at: datetime,
                       run_id: str | None = None) -> None:
    """Append leadflow's stage moves of one page to ``lf_stage_history`` (one statement)."""
    if not moves:
        return
    rows = [(crm, m.crm_id, m.stage, m.previous_stage, at, run_id) for m in moves]
    with engine.begin() as conn:
        insert_many(conn, history_table, ("crm", "crm_id", "stage", "previous_stage", "at", "run_id"), rows)


_FACT_COLUMNS = ("crm", "crm_id", "source", "campaign", "segment", "stage", "lead_score", "fit_score",
                 "engagement_score", "scores", "unmet", "traits", "model_version", "scored_at")


def record_lead_facts(engine: Engine, crm: str, facts: Sequence[dict[str, Any]]) -> None:
    """Upsert the facts of one page's leads (``scoring.feedback.lead_facts`` dicts; one statement)."""
    if not facts:
        return
    rows = [(crm, *(f.get(c) for c in _FACT_COLUMNS[1:])) for f in facts]
    with engine.begin() as conn:
        insert_many(conn, facts_table, _FACT_COLUMNS, rows, conflict_keys=("crm", "crm_id"))


def lead_facts(engine: Engine, crm: str, crm_ids: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """crm_id -> the facts the last run qualified the lead on (or only ``crm_ids``)."""
    out: dict[str, dict[str, Any]] = {}
    with engine.connect() as conn:
        for chunk in _id_chunks(crm_ids):
            query = select(facts_table).where(facts_table.c.crm == crm)
            if chunk is not None:
                query = query.where(facts_table.c.crm_id.in_(chunk))
            for row in conn.execute(query).mappings():
                out[row["crm_id"]] = {c: utc_if_datetime(row[c]) for c in _FACT_COLUMNS[1:]}
    return out


@dataclass
class LeadJourney:
    """One lead's path: leadflow's stages with the time each was first reached, then the CRM's outcome."""

    crm_id: str
    stages: dict[str, datetime] = field(default_factory=dict)
    lead_status: str | None = None
    lifecycle_stage: str | None = None
    crm_stage_dates: dict[str, str] = field(default_factory=dict)
    converted_at: datetime | None = None
    opportunity_id: str | None = None
    opportunity_stage: str | None = None
    opportunity_created_at: datetime | None = None
    won: bool | None = None
    closed_at: date | None = None
    amount: float | None = None

    @property
    def furthest(self) -> str:
        """The furthest step reached: won, lost, opportunity, or leadflow's latest stage."""
        if self.won:
            return "won"
        if self.won is False and self.closed_at is not None:
            return "lost"
        if self.opportunity_id:
            return "opportunity"
        return max(self.stages, key=lambda s: self.stages[s]) if self.stages else "unknown"


def funnel(engine: Engine, crm: str, crm_ids: Sequence[str] | None = None) -> dict[str, LeadJourney]:
    """crm_id -> ``LeadJourney`` for every lead with a stage move or an outcome (or only ``crm_ids``)."""
    journeys: dict[str, LeadJourney] = {}
    with engine.connect() as conn:
        for chunk in _id_chunks(crm_ids):
            query = select(history_table.c.crm_id, history_table.c.stage, history_table.c.at).where(
                history_table.c.crm == crm)
            if chunk is not None:
                query = query.where(history_table.c.crm_id.in_(chunk))
            for crm_id, stage, at in conn.execute(query.order_by(history_table.c.at, history_table.c.id)):
                journeys.setdefault(crm_id, LeadJourney(crm_id)).stages.setdefault(stage, utc_if_datetime(at))
            query = select(outcomes_table).where(outcomes_table.c.crm == crm)
            if chunk is not None:
                query = query.where(outcomes_table.c.crm_id.in_(chunk))
            for row in conn.execute(query).mappings():
                journey = journeys.setdefault(row["crm_id"], LeadJourney(row["crm_id"]))
                journey.lead_status, journey.lifecycle_stage = row["lead_status"], row["lifecycle_stage"]
                journey.crm_stage_dates = dict(row["stage_dates"] or {})
                journey.converted_at = utc_if_datetime(row["converted_at"])
                journey.opportunity_id, journey.opportunity_stage = row["opportunity_id"], row["opportunity_stage"]
                journey.opportunity_created_at = utc_if_datetime(row["opportunity_created_at"])
                journey.won = None if row["opportunity_won"] is None else bool(row["opportunity_won"])
                journey.closed_at = row["opportunity_close_date"] if row["opportunity_closed"] else None
                journey.amount = row["opportunity_amount"]
    return journeys


def _id_chunks(crm_ids: Sequence[str] | None) -> Iterable[list[str] | None]:
    if crm_ids is None:
        yield None
        return
    ids = list(crm_ids)
    for start in range(0, len(ids), _CHUNK):
        yield ids[start:start + _CHUNK]
