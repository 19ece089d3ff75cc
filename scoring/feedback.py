"""The feedback loop, as pure functions over plain data: which channels create qualified leads,
where qualified leads stall, how well the lead score predicts outcomes, and what to change.

Inputs are ``LeadRecord`` values the flow builds from the state store (leadflow's stage history,
the CRM outcomes, the per-lead facts each run keeps); nothing here reads or writes anything.

Statistics are small well-known formulas written out (no scipy/statsmodels for three formulas):
the Wilson score interval for a proportion, the Brier score, the median (``statistics``).
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

from scoring.stages import Signals, sql_missing
from scoring.tasks import TASK_STAGES

STEPS = ("inquiry", "mql", "sal", "sql", "opportunity", "won")
_STEP_OF_STAGE = {"inquiry": 0, "nurture": 0, "disqualified": 0, "mql": 1, "sal": 2, "sql": 3,
                  "intake_ready": 0, "redirect": 0}
_STEP_OF_CRM_DATE = {"lead": 0, "mql": 1, "sql": 3, "opportunity": 4, "customer": 5}
MIN_SAMPLE = 30  # below this many leads a rate is shown but not acted on
Z95 = 1.959963984540054
TRAIT_NAMES = ("source", "segment", "decision_role", "security_review", "baa_status", "timeline", "budget_status")
SCORED_CRITERIA = ("fit", "need", "authority", "budget", "timeline", "compliance", "engagement")


# --------------------------------------------------------------------------- statistics


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95% by default); (0, 1) when n is 0."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def brier_score(pairs: Sequence[tuple[float, bool]]) -> float | None:
    """Mean squared difference between forecast probabilities and outcomes (0 is perfect)."""
    if not pairs:
        return None
    return sum((p - (1.0 if y else 0.0)) ** 2 for p, y in pairs) / len(pairs)


def rate(successes: int, n: int, min_n: int = MIN_SAMPLE) -> dict[str, Any]:
    low, high = wilson_interval(successes, n)
    return {"n": n, "k": successes, "rate": round(successes / n, 4) if n else None,
            "ci_low": round(low, 4), "ci_high": round(high, 4), "enough_data": n >= min_n}


# --------------------------------------------------------------------------- per-lead facts


def lead_facts(lead: Any, q: Any, model: Any) -> dict[str, Any]:
    """What the report needs to remember of one qualified lead: channel, segment, scores, the
    criteria still unmet for the next stage, and its traits (enumerated values only, never free
    text; a patient lead keeps none)."""
    scored = q.criterion_scores
    patient = lead.lead_kind.value == "patient"
    return {
        "crm_id": lead.crm_id, "source": lead.source.value, "campaign": None if patient else lead.campaign,
        "segment": q.segment, "stage": q.stage.value, "lead_score": q.lead_score, "fit_score": q.fit_score,
        "engagement_score": q.engagement_score, "scores": scored,
        "unmet": [] if patient else unmet_criteria(lead, q, model),
        "traits": {} if patient else {name: _value(getattr(lead, name)) for name in TRAIT_NAMES
                                      if name not in ("source", "segment")},
        "model_version": q.model_version, "scored_at": q.scored_at,
    }


def _value(value: Any) -> Any:
    return getattr(value, "value", value)


def unmet_criteria(lead: Any, q: Any, model: Any) -> list[str]:
    """The gates a lead has not passed for the next stage: the MQL gates (fit, engagement) below
    MQL; what SQL still needs (need, authority, timeline, budget path) at MQL and SAL; at SQL, the
    criteria scored below 50 (what an opportunity is likely to stall on)."""
    stage = q.stage.value
    seg = model.segments.get(q.segment)
    if seg is None:
        return []
    scored = q.criterion_scores
    if stage in ("inquiry", "nurture"):
        return [name for name, ok in (("fit", q.fit_score >= seg.mql_fit),
                                      ("engagement", q.engagement_score >= seg.mql_engagement)) if not ok]
    if stage in ("mql", "sal"):
        signals = Signals(q.fit_score, q.engagement_score, scored.get("authority", 0), ())
        return sql_missing(lead, seg, signals)
    if stage == "sql":
        return [name for name in ("need", "authority", "budget", "timeline", "compliance") if scored.get(name, 100) < 50]
    return []


# --------------------------------------------------------------------------- lead paths


@dataclass
class LeadRecord:
    """One lead's path through the funnel and the facts it was qualified on."""

    crm_id: str
    source: str = "other"
    campaign: str | None = None
    segment: str = "unknown"
    stage: str | None = None
    lead_score: int | None = None
    unmet: list[str] = field(default_factory=list)
    traits: dict[str, Any] = field(default_factory=dict)
    scores: dict[str, int] = field(default_factory=dict)
    reached: dict[str, datetime | None] = field(default_factory=dict)  # step -> when (None: date unknown)
    won: bool | None = None
    lost: bool = False

    @property
    def furthest(self) -> int:
        return max((STEPS.index(s) for s in self.reached), default=-1)

    def has(self, step: str) -> bool:
        return step in self.reached


def _as_datetime(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
    return None


def lead_record(journey: Any, facts: Mapping[str, Any] | None) -> LeadRecord:
    """A ``LeadRecord`` from a stage-history-and-outcome journey (``state.outcomes.LeadJourney``)
    and the lead's facts. Reaching a step means reaching every step before it (an opportunity was
    an SQL, whatever leadflow called it); each step's date is the earliest known, and no later than
    the next step's (a first run dates leadflow's stages at the run, after older CRM events)."""
    facts = facts or {}
    dates: dict[int, list[datetime]] = {}
    furthest = 0

    def seen(index: int, when: Any) -> None:
        nonlocal furthest
        furthest = max(furthest, index)
        at = _as_datetime(when)
        if at is not None:
            dates.setdefault(index, []).append(at)

    for stage, at in (journey.stages or {}).items():
        seen(_STEP_OF_STAGE.get(stage, 0), at)
    if facts.get("stage"):
        seen(_STEP_OF_STAGE.get(facts["stage"], 0), None)
    for name, at in (journey.crm_stage_dates or {}).items():
        if name in _STEP_OF_CRM_DATE:
            seen(_STEP_OF_CRM_DATE[name], at)
    if journey.opportunity_id:
        seen(4, journey.opportunity_created_at or journey.converted_at)
    if journey.won:
        seen(5, journey.closed_at)
    known = [min(dates[i]) if i in dates else None for i in range(furthest + 1)]
    for i in range(furthest - 1, -1, -1):  # a step was reached no later than the steps after it
        if known[i] is not None and known[i + 1] is not None and known[i + 1] < known[i]:
            known[i] = known[i + 1]
    reached = {STEPS[i]: known[i] for i in range(furthest + 1)}
    first = min((d for ds in dates.values() for d in ds), default=None)
    if reached.get("inquiry") is None:
        reached["inquiry"] = first
    return LeadRecord(
        crm_id=journey.crm_id, source=facts.get("source") or "other", campaign=facts.get("campaign"),
        segment=facts.get("segment") or "unknown", stage=facts.get("stage"), lead_score=facts.get("lead_score"),
        unmet=list(facts.get("unmet") or []), traits=dict(facts.get("traits") or {}),
        scores=dict(facts.get("scores") or {}), reached=reached,
        won=journey.won, lost=journey.won is False and journey.closed_at is not None)


# --------------------------------------------------------------------------- the report


def funnel_steps(records: Sequence[LeadRecord], min_n: int = MIN_SAMPLE) -> list[dict[str, Any]]:
    """inquiry -> MQL -> SAL -> SQL -> opportunity -> won: leads at each step, the conversion
    from the step before (rate, Wilson interval, sample size) and the median days between them."""
    steps = [{"step": STEPS[0], "leads": sum(1 for r in records if r.has(STEPS[0]))}]
    for before, step in zip(STEPS, STEPS[1:]):
        base = [r for r in records if r.has(before)]
        moved = [r for r in base if r.has(step)]
        days = [(r.reached[step] - r.reached[before]).total_seconds() / 86400 for r in moved
                if r.reached[step] is not None and r.reached[before] is not None and r.reached[step] >= r.reached[before]]
        steps.append({"step": step, "leads": len(moved), **rate(len(moved), len(base), min_n),
                      "median_days": round(statistics.median(days), 1) if days else None})
    return steps


def _groups(records: Iterable[LeadRecord], key: str) -> dict[str, list[LeadRecord]]:
    groups: dict[str, list[LeadRecord]] = {}
    for r in records:
        value = getattr(r, key)
        if value:
            groups.setdefault(str(value), []).append(r)
    return groups


def funnel(records: Sequence[LeadRecord], min_n: int = MIN_SAMPLE) -> dict[str, Any]:
    return {"overall": funnel_steps(records, min_n),
            **{f"by_{key}": {value: funnel_steps(group, min_n) for value, group in sorted(_groups(records, key).items())}
               for key in ("source", "campaign", "segment")}}


def channel_quality(records: Sequence[LeadRecord], key: str = "source", min_n: int = MIN_SAMPLE) -> list[dict[str, Any]]:
    """Per channel: volume and the SQL, opportunity and won rates per lead (``ci_low``/``ci_high``
    are the won rate's Wilson interval, ``opportunity_ci_*`` the opportunity rate's), best first:
    by opportunity rate (qualified leads that sales took on, not raw volume), then won rate."""
    rows = []
    for value, group in _groups(records, key).items():
        n = len(group)
        won = sum(1 for r in group if r.has("won"))
        opportunities = sum(1 for r in group if r.has("opportunity"))
        low, high = wilson_interval(won, n)
        opp_low, opp_high = wilson_interval(opportunities, n)
        rows.append({key: value, "leads": n,
                     "sql_rate": round(sum(r.has("sql") for r in group) / n, 4),
                     "opportunity_rate": round(opportunities / n, 4),
                     "opportunity_ci_low": round(opp_low, 4), "opportunity_ci_high": round(opp_high, 4),
                     "won_rate": round(won / n, 4), "won": won, "ci_low": round(low, 4), "ci_high": round(high, 4),
                     "enough_data": n >= min_n})
    rows.sort(key=lambda row: (-row["opportunity_rate"], -row["won_rate"], -row["leads"], row[key]))
    return rows


def quality_over_time(records: Sequence[LeadRecord], key: str = "source", min_n: int = MIN_SAMPLE) -> dict[str, Any]:
    """Per channel and quarter of the inquiry: leads and the opportunity rate with its interval
    (a referral source that used to send good leads and no longer does shows here)."""
    out: dict[str, dict[str, Any]] = {}
    for value, group in sorted(_groups(records, key).items()):
        by_quarter: dict[str, list[LeadRecord]] = {}
        for r in group:
            first = r.reached.get("inquiry")
            label = f"{first.year}-Q{(first.month - 1) // 3 + 1}" if first else "unknown"
            by_quarter.setdefault(label, []).append(r)
        out[value] = {quarter: rate(sum(r.has("opportunity") for r in rows), len(rows), min_n)
                      for quarter, rows in sorted(by_quarter.items())}
    return out


def calibration(pairs: Sequence[tuple[int, bool]], outcome: str = "opportunity", min_n: int = MIN_SAMPLE) -> dict[str, Any]:
    """Reliability by lead-score decile (0-9, 10-19, ..., 90-100): the mean score read as a
    probability against the observed rate of ``outcome``; the Brier score of score/100."""
    bins: dict[int, list[tuple[int, bool]]] = {}
    for score, hit in pairs:
        bins.setdefault(min(int(score) // 10, 9), []).append((score, hit))
    deciles = []
    for index in range(10):
        members = bins.get(index, [])
        hits = sum(1 for _, hit in members if hit)
        deciles.append({"decile": index, "scores": f"{index * 10}-{index * 10 + 9 if index < 9 else 100}",
                        "predicted": round(statistics.mean(s for s, _ in members) / 100, 4) if members else None,
                        **rate(hits, len(members), min_n)})
    brier = brier_score([(score / 100, hit) for score, hit in pairs])
    base = sum(hit for _, hit in pairs) / len(pairs) if pairs else None
    return {"outcome": outcome, "leads": len(pairs), "deciles": deciles,
            "brier": round(brier, 4) if brier is not None else None,
            "brier_base_rate": round(base * (1 - base), 4) if base is not None else None}


def gate_separation(records: Sequence[LeadRecord], outcome: str = "opportunity",
                    min_n: int = MIN_SAMPLE) -> list[dict[str, Any]]:
    """Whether each stage gate separates: the outcome rate of leads that passed it vs those that did not."""
    rows = []
    for step in ("mql", "sql"):
        passed = [r for r in records if r.has(step) and _passed_by_leadflow(r, step)]
        failed = [r for r in records if not r.has(step)]
        p, f = rate(sum(r.has(outcome) for r in passed), len(passed), min_n), \
            rate(sum(r.has(outcome) for r in failed), len(failed), min_n)
        lift = round(p["rate"] / f["rate"], 2) if p["rate"] is not None and f["rate"] else None
        rows.append({"gate": step, "passed": p, "not_passed": f, "lift": lift,
                     "separates": p["ci_low"] > f["ci_high"], "enough_data": p["enough_data"] and f["enough_data"]})
    return rows


def _passed_by_leadflow(record: LeadRecord, step: str) -> bool:
    return record.stage is not None and _STEP_OF_STAGE.get(record.stage, 0) >= STEPS.index(step)


def stalls(records: Sequence[LeadRecord], now: datetime, stall_days: float = 30,
           min_n: int = MIN_SAMPLE) -> dict[str, Any]:
    """MQLs and SQLs (leadflow's stage) with no opportunity ``stall_days`` after reaching that
    stage: per stage, the unmet criterion most often behind them; over all, the traits with the
    largest lift between leads that moved forward (reached an opportunity) and stalled ones."""
    cutoff = now - timedelta(days=stall_days)
    by_stage: dict[str, Any] = {}
    stalled_all: list[LeadRecord] = []
    for stage, step in (("mql", "mql"), ("sal", "sal"), ("sql", "sql")):
        stalled = [r for r in records if r.stage == stage and not r.has("opportunity")
                   and (r.reached.get(step) or r.reached.get("inquiry") or now) <= cutoff]
        stalled_all += stalled
        unmet = Counter(c for r in stalled for c in r.unmet)
        by_stage[stage] = {"stalled": len(stalled),
                           "unmet": [{"criterion": c, "leads": k, "share": round(k / len(stalled), 4)}
                                     for c, k in unmet.most_common()],
                           "most_unmet": unmet.most_common(1)[0][0] if unmet else None,
                           "enough_data": len(stalled) >= min_n}
    moved = [r for r in records if r.has("mql") and r.has("opportunity")]
    segments = Counter(r.segment for r in moved if r.segment not in ("patient", "unknown"))
    return {"stall_days": stall_days, "by_stage": by_stage, "stalled": len(stalled_all), "moved_forward": len(moved),
            "moved_segment": segments.most_common(1)[0][0] if segments else None,
            "traits": trait_lift(moved, stalled_all, min_n)}


BANDED = ("fit", "authority", "compliance", "engagement")  # criterion scores as traits: high (>= 60) or low


def _traits(record: LeadRecord) -> dict[str, str]:
    values = {"source": record.source, "segment": record.segment, **record.traits}
    values.update({name: "high" if record.scores[name] >= 60 else "low" for name in BANDED if name in record.scores})
    return {k: str(v) for k, v in values.items() if v not in (None, "", "unknown")}


def trait_lift(moved: Sequence[LeadRecord], stalled: Sequence[LeadRecord], min_n: int = MIN_SAMPLE,
               top: int = 8) -> list[dict[str, Any]]:
    """Traits (name = value; criterion scores as high/low bands) that differ most between leads that
    moved forward and stalled ones, by the difference of their shares (so that a common trait with
    a real difference ranks above a rare one); lift = share among moved / share among stalled,
    add-one smoothed."""
    if not moved or not stalled:
        return []
    in_moved = Counter(item for r in moved for item in _traits(r).items())
    in_stalled = Counter(item for r in stalled for item in _traits(r).items())
    rows = []
    for item in set(in_moved) | set(in_stalled):
        a, b = in_moved.get(item, 0), in_stalled.get(item, 0)
        if a + b < 5:
            continue
        share_moved, share_stalled = (a + 1) / (len(moved) + 2), (b + 1) / (len(stalled) + 2)
        rows.append({"trait": item[0], "value": item[1], "moved": a, "stalled": b,
                     "share_moved": round(a / len(moved), 4), "share_stalled": round(b / len(stalled), 4),
                     "lift": round(share_moved / share_stalled, 3), "enough_data": a + b >= min_n})
    rows.sort(key=lambda row: (-abs(row["share_moved"] - row["share_stalled"]), row["trait"], row["value"]))
    return rows[:top]


# --------------------------------------------------------------------------- suggestions


_TRAIT_CRITERION = {"decision_role": "authority", "security_review": "compliance", "baa_status": "compliance",
                    "timeline": "timeline", "budget_status": "budget", "fit": "fit", "authority": "authority",
                    "compliance": "compliance", "engagement": "engagement"}


def suggestions(report: Mapping[str, Any], model: Any, min_n: int = MIN_SAMPLE) -> list[dict[str, Any]]:
    """Changes to weights, thresholds or gates the report's evidence points to, each with its
    evidence, sample size, expected effect and ``enough_data`` (with a plain warning when the
    sample is too small to act on). ``edit`` is the model-file change, for a candidate file."""
    out: list[dict[str, Any]] = []
    overall = report["funnel"]["overall"]
    won_rate = overall[-1]["k"] / overall[0]["leads"] if overall[0]["leads"] else 0.0
    for row in report["channels"]:
        prior = model.source_prior.get(row["source"])
        if prior is None:
            continue
        better, worse = row["ci_low"] > won_rate, row["ci_high"] < won_rate
        if not (better or worse) and row["enough_data"]:
            continue
        direction = "raise" if row["won_rate"] > won_rate else "lower"
        prior = int(round(prior))
        new = min(100, prior + 10) if direction == "raise" else max(0, prior - 10)
        if new == prior:
            continue
        out.append(_suggestion(
            f"{direction} the source prior of '{row['source']}' from {prior} to {new}",
            f"won rate {row['won_rate']:.1%} (95% CI {row['ci_low']:.1%}-{row['ci_high']:.1%}) vs {won_rate:.1%} overall",
            row["leads"], row["enough_data"] and (better or worse), min_n,
            f"{row['source']} leads reach MQL {'sooner' if direction == 'raise' else 'later'}",
            {"path": ["engagement", "source_prior", row["source"]], "from": prior, "to": new}))
    for stage, info in report["stalls"]["by_stage"].items():
        if info["most_unmet"] and info["stalled"]:
            top = info["unmet"][0]
            out.append(_suggestion(
                f"make '{info['most_unmet']}' a discovery step of the {stage.upper()} task",
                f"{top['leads']} of {info['stalled']} stalled {stage.upper()}s ({top['share']:.0%}) lack it",
                info["stalled"], info["enough_data"], min_n,
                f"fewer {stage.upper()}s stall on {info['most_unmet']}", None))
    out.extend(_weight_suggestions(report["stalls"]["traits"], report["stalls"].get("moved_segment"), model, min_n))
    for gate in report["calibration"].get("gates", []):
        if gate["separates"] or gate["gate"] != "mql":
            continue
        out.extend(_gate_suggestions(gate, model, min_n))
    return out


def _suggestion(change: str, evidence: str, n: int, enough: bool, min_n: int, effect: str,
                edit: dict[str, Any] | None) -> dict[str, Any]:
    row = {"change": change, "evidence": evidence, "n": n, "enough_data": bool(enough), "expected_effect": effect,
           "edit": edit}
    if not enough:
        row["warning"] = (f"too little evidence to act on: {n} lead(s)" + (f", fewer than {min_n}" if n < min_n
                          else ", and the interval does not exclude the overall rate"))
    return row


def _weight_suggestions(traits: Sequence[Mapping[str, Any]], segment: str | None, model: Any,
                        min_n: int) -> list[dict[str, Any]]:
    """The criterion behind the trait that most separates moved-forward leads, weighted up in the
    segment most of them belong to."""
    segment = segment if segment in model.segments else "health_system"
    out = []
    for row in traits:
        criterion = _TRAIT_CRITERION.get(row["trait"])
        if criterion is None or row["lift"] < 1.5:
            continue
        edit = {"path": ["segments", segment, "weights", criterion], "by": 10}
        out.append(_suggestion(
            f"raise the weight of {criterion} in '{segment}' by 10 points (the trait {row['trait']} = {row['value']})",
            f"{row['share_moved']:.0%} of leads that moved forward have it vs {row['share_stalled']:.0%} of stalled "
            f"ones (lift {row['lift']:.2f})", row["moved"] + row["stalled"], row["enough_data"], min_n,
            f"leads with {row['trait']} = {row['value']} score higher", edit))
        break
    return out


def _gate_suggestions(gate: Mapping[str, Any], model: Any, min_n: int) -> list[dict[str, Any]]:
    seg = model.segments["health_system"]
    n = gate["passed"]["n"] + gate["not_passed"]["n"]
    return [_suggestion(
        f"raise the MQL fit gate of '{seg.label}' from {seg.mql_fit:g} to {seg.mql_fit + 10:g}",
        f"MQLs reach an opportunity at {gate['passed']['rate'] or 0:.1%}, the others at "
        f"{gate['not_passed']['rate'] or 0:.1%}: the gate does not separate them", n, gate["enough_data"], min_n,
        "fewer, better MQLs", {"path": ["segments", "health_system", "thresholds", "mql_fit"],
                               "from": seg.mql_fit, "to": seg.mql_fit + 10})]


def build_report(records: Sequence[LeadRecord], model: Any, now: datetime, *, stall_days: float = 30,
                 min_n: int = MIN_SAMPLE, outcome: str = "opportunity") -> dict[str, Any]:
    """The whole report (the JSON ``leadflow report --json`` prints)."""
    scored = [(r.lead_score, r.has(outcome)) for r in records if r.lead_score is not None]
    cal = calibration(scored, outcome, min_n)
    cal["gates"] = gate_separation(records, outcome, min_n)
    report: dict[str, Any] = {
        "leads": len(records), "min_sample": min_n, "outcome": outcome,
        "funnel": funnel(records, min_n),
        "channels": channel_quality(records, "source", min_n),
        "campaigns": channel_quality(records, "campaign", min_n),
        "channels_over_time": quality_over_time(records, "source", min_n),
        "calibration": cal,
        "stalls": stalls(records, now, stall_days, min_n),
    }
    report["suggestions"] = suggestions(report, model, min_n)
    return report


# --------------------------------------------------------------------------- backtest


@dataclass(frozen=True)
class Replayed:
    """One lead as one model qualifies it."""

    crm_id: str
    stage: str
    lead_score: int
    manual: bool = False


def backtest(current: Sequence[Replayed], candidate: Sequence[Replayed], outcomes: Mapping[str, bool],
             task_stages: frozenset[str] = TASK_STAGES, min_n: int = MIN_SAMPLE,
             outcome: str = "opportunity") -> dict[str, Any]:
    """The stage migration matrix (current stage -> candidate stage -> leads), the leads that move,
    the next-step tasks the candidate would create (a move into a task stage) or close (a move out
    of a stage whose task is open), and the calibration of each model against known outcomes."""
    by_id = {r.crm_id: r for r in candidate}
    matrix: dict[str, dict[str, int]] = {}
    moved, created, closed = [], [], []
    for now in current:
        then = by_id.get(now.crm_id)
        if then is None:
            continue
        matrix.setdefault(now.stage, {}).setdefault(then.stage, 0)
        matrix[now.stage][then.stage] += 1
        if now.stage == then.stage:
            continue
        moved.append({"crm_id": now.crm_id, "from": now.stage, "to": then.stage})
        if not now.manual and then.stage in task_stages:
            created.append({"crm_id": now.crm_id, "stage": then.stage})
        if not now.manual and now.stage in task_stages:
            closed.append({"crm_id": now.crm_id, "stage": now.stage})

    def cal(rows: Sequence[Replayed]) -> dict[str, Any]:
        return calibration([(r.lead_score, outcomes[r.crm_id]) for r in rows if r.crm_id in outcomes], outcome, min_n)

    return {"leads": len(current), "migration": matrix, "moved": moved,
            "tasks_created": len(created), "tasks_closed": len(closed),
            "tasks_created_by_stage": dict(Counter(t["stage"] for t in created)),
            "tasks_closed_by_stage": dict(Counter(t["stage"] for t in closed)),
            "calibration_current": cal(current), "calibration_candidate": cal(candidate)}


def apply_edit(spec: dict[str, Any], edit: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a model file's data with one suggestion's edit applied (its version marked)."""
    import copy

    result = copy.deepcopy(spec)
    node = result
    for key in edit["path"][:-1]:
        node = node.setdefault(key, {})
    last = edit["path"][-1]
    node[last] = edit["to"] if edit.get("to") is not None else min(100, (node.get(last) or 0) + edit["by"])
    result["version"] = f"{result.get('version', 'model')}-candidate"
    return result
