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
    """The most important reasons whole, in rank order, joined by "; " while they fit in ``limit``
    characters, then how many more the detail field holds ("(+2 more in reasons detail)"); the
    first reason is cut only when it alone is too long."""
    if not reasons:
        return ""
    kept = 1
    length = len(reasons[0])
    count = len(reasons)
    for position in range(1, count):
        left_after = count - position - 1
        needed = length + 2 + len(reasons[position]) + (_more_length(left_after) if left_after else 0)
        if needed > limit:
            break
        kept += 1
        length += 2 + len(reasons[position])
    more = _more(count - kept) if kept < count else ""
    if length + len(more) > limit:  # the first reason alone is too long
        return reasons[0][: limit - len(more) - 1] + "…" + more
    return "; ".join(reasons[:kept]) + more


_MORE_FIXED = len(" (+ more in reasons detail)")


def _more_length(count: int) -> int:
    """``len(_more(count))`` without building the string."""
    return _MORE_FIXED + len(str(count))


def _more(count: int) -> str:
    return f" (+{count} more in reasons detail)"


def full(stage: str, previous: str | None, scores: str, stage_reasons: list[str], weighted: list[Reason]) -> str:
    """Every reason, one per line, positives then negatives, for a long text field."""
    moved = f" (was {previous})" if previous and previous != stage else ""
    lines = [f"Stage: {stage}{moved}. {scores}."]
    lines += [f"* {text}" for text in stage_reasons]
    said = set(stage_reasons)
    lines += [f"+ {t}" for impact, t in sorted(weighted, key=lambda r: -r[0]) if impact > 0 and t not in said]
    lines += [f"- {t}" for impact, t in sorted(weighted, key=lambda r: r[0]) if impact < 0 and t not in said]
    return "\n".join(lines)
