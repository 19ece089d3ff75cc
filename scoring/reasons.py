"""Reasons as sales reads them: a ranked list, a 255-character compact form and a full form."""

from __future__ import annotations

from operator import itemgetter

from scoring.criteria import Reason

_impact = itemgetter(0)
COMPACT_LIMIT = 255
TOP_POSITIVE = 3
TOP_NEGATIVE = 3


def ranked(stage_reasons: list[str], weighted: list[Reason]) -> list[str]:
    """Stage reasons first, then the top positive and the top negative reasons (by weighted impact)."""
    by_impact = sorted(weighted, key=_impact)
    negative = [r for r in by_impact[:TOP_NEGATIVE] if r[0] < 0]
    positive = [r for r in by_impact[: -TOP_POSITIVE - 1 : -1] if r[0] > 0]
    seen = set(stage_reasons)
    out = list(stage_reasons)
    for _, text in positive + negative:
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


def compact(reasons: list[str], limit: int = COMPACT_LIMIT) -> str:
    """Whole reasons joined by "; " while they fit in ``limit`` characters (the first one cut if it must be)."""
    if not reasons:
        return ""
    first = reasons[0]
    if len(first) > limit:
        return first[: limit - 1] + "…"
    text = first
    for reason in reasons[1:]:
        candidate = f"{text}; {reason}"
        if len(candidate) <= limit:
            text = candidate
    return text


def full(stage: str, previous: str | None, scores: str, stage_reasons: list[str], weighted: list[Reason]) -> str:
    """Every reason, one per line, positives then negatives, for a long text field."""
    moved = f" (was {previous})" if previous and previous != stage else ""
    lines = [f"Stage: {stage}{moved}. {scores}."]
    lines += [f"* {text}" for text in stage_reasons]
    said = set(stage_reasons)
    lines += [f"+ {t}" for impact, t in sorted(weighted, key=lambda r: -r[0]) if impact > 0 and t not in said]
    lines += [f"- {t}" for impact, t in sorted(weighted, key=lambda r: r[0]) if impact < 0 and t not in said]
    return "\n".join(lines)
