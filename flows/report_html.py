"""The qualification report rendered: markdown (the Prefect artifact's headline tables) and one
self-contained HTML file with inline SVG charts (funnel, rates by channel with their intervals,
calibration curve, stall reasons). The HTML loads nothing: no script, no stylesheet, font or
image from anywhere, so it opens offline and makes no network request.

Charts are hand-drawn SVG (a few rectangles and lines each) rather than matplotlib: four bar and
line charts did not justify a plotting stack and its native dependencies in the install.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

CHART_WIDTH = 720
ROW = 26
_BAR = "#3b6fb6"
_SECOND = "#d9822b"
_GRID = "#d8dde6"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


# --------------------------------------------------------------------------- markdown


def render_markdown(report: dict[str, Any], top: int = 12) -> str:
    lines = [f"# Qualification report: {report.get('crm', '')}",
             f"{report['leads']} leads; window {report.get('since') or 'beginning'} → {report.get('until') or 'now'}; "
             f"model {report.get('model_version', '')}. Rates with fewer than {report['min_sample']} leads are not "
             "acted on.", "", "## Funnel", "", "| step | leads | conversion | 95% CI | n | median days |",
             "|---|---:|---:|---|---:|---:|"]
    for step in report["funnel"]["overall"]:
        lines.append(f"| {step['step']} | {step['leads']} | {_pct(step.get('rate'))} | "
                     f"{_pct(step.get('ci_low'))}–{_pct(step.get('ci_high'))} | {step.get('n', step['leads'])} | "
                     f"{step.get('median_days') if step.get('median_days') is not None else '–'} |"
                     if "rate" in step else f"| {step['step']} | {step['leads']} | | | | |")
    lines += ["", "## Channels (by opportunity rate)", "",
              "| source | leads | SQL rate | opportunity rate | won rate | won 95% CI | enough data |",
              "|---|---:|---:|---:|---:|---|---|"]
    for row in report["channels"][:top]:
        lines.append(f"| {row['source']} | {row['leads']} | {_pct(row['sql_rate'])} | {_pct(row['opportunity_rate'])} | "
                     f"{_pct(row['won_rate'])} | {_pct(row['ci_low'])}–{_pct(row['ci_high'])} | "
                     f"{'yes' if row['enough_data'] else 'no: too few leads'} |")
    cal = report["calibration"]
    lines += ["", f"## Calibration ({cal['outcome']} by lead-score decile; Brier {cal['brier']})", "",
              "| scores | leads | predicted | observed |", "|---|---:|---:|---:|"]
    for d in cal["deciles"]:
        if d["n"]:
            lines.append(f"| {d['scores']} | {d['n']} | {_pct(d['predicted'])} | {_pct(d['rate'])} |")
    lines += ["", f"## Stalls (no opportunity {report['stalls']['stall_days']:g} days after the stage)", "",
              "| stage | stalled | most often unmet |", "|---|---:|---|"]
    for stage, info in report["stalls"]["by_stage"].items():
        lines.append(f"| {stage} | {info['stalled']} | {info['most_unmet'] or '–'} |")
    lines += ["", "## Suggestions", ""]
    for s in report["suggestions"] or [{"change": "none", "evidence": "", "n": 0, "enough_data": True}]:
        warn = f" **Warning: {s['warning']}.**" if s.get("warning") else ""
        lines.append(f"- {s['change']} — {s['evidence']} (n = {s['n']}).{warn}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- SVG charts


def _svg(chart_id: str, height: int, body: Sequence[str], title: str) -> str:
    return (f'<svg id="{chart_id}" xmlns="http://www.w3.org/2000/svg" width="{CHART_WIDTH}" height="{height}" '
            f'viewBox="0 0 {CHART_WIDTH} {height}" role="img" aria-label="{escape(title)}">'
            f'<rect width="100%" height="100%" fill="#ffffff"/>' + "".join(body) + "</svg>")


def _text(x: float, y: float, text: str, anchor: str = "start", size: int = 12, weight: str = "normal") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" font-family="sans-serif" text-anchor="{anchor}" '
            f'font-weight="{weight}" fill="#222">{escape(text)}</text>')


def _hbars(chart_id: str, title: str, rows: Sequence[tuple[str, float, str]], maximum: float,
           intervals: Sequence[tuple[float, float] | None] = ()) -> str:
    """Horizontal bars: (label, value, note) per row, optional whiskers (low, high) on the same scale."""
    left, right, top = 170, 90, 34
    span = CHART_WIDTH - left - right
    height = top + ROW * max(1, len(rows)) + 16
    body = [_text(10, 20, title, size=14, weight="bold")]
    for i, (label, value, note) in enumerate(rows):
        y = top + i * ROW
        width = span * (value / maximum if maximum else 0)
        body.append(_text(left - 8, y + 15, label, "end"))
        body.append(f'<rect class="bar" x="{left}" y="{y + 3}" width="{max(width, 1):.1f}" height="{ROW - 8}" '
                    f'fill="{_BAR}"/>')
        interval = intervals[i] if i < len(intervals) else None
        if interval is not None:
            lo, hi = (left + span * (v / maximum if maximum else 0) for v in interval)
            mid = y + ROW / 2 - 1
            body.append(f'<line x1="{lo:.1f}" y1="{mid:.1f}" x2="{hi:.1f}" y2="{mid:.1f}" stroke="#111" stroke-width="1.5"/>'
                        f'<line x1="{lo:.1f}" y1="{mid - 5:.1f}" x2="{lo:.1f}" y2="{mid + 5:.1f}" stroke="#111"/>'
                        f'<line x1="{hi:.1f}" y1="{mid - 5:.1f}" x2="{hi:.1f}" y2="{mid + 5:.1f}" stroke="#111"/>')
        body.append(_text(left + span + 6, y + 15, note))
    return _svg(chart_id, height, body, title)


def funnel_chart(report: dict[str, Any]) -> str:
    steps = report["funnel"]["overall"]
    top = max((s["leads"] for s in steps), default=0) or 1
    rows = [(s["step"], s["leads"], f"{s['leads']}" + (f" ({_pct(s.get('rate'))})" if s.get("rate") is not None else ""))
            for s in steps]
    return _hbars("chart-funnel", "Funnel: leads reaching each step (conversion from the step before)", rows, top)


def channel_chart(report: dict[str, Any], top: int = 12) -> str:
    channels = report["channels"][:top]
    maximum = max((row["opportunity_ci_high"] for row in channels), default=0) or 1
    rows = [(f"{row['source']} (n={row['leads']})", row["opportunity_rate"],
             f"{_pct(row['opportunity_rate'])}{'' if row['enough_data'] else ' *'}") for row in channels]
    intervals = [(row["opportunity_ci_low"], row["opportunity_ci_high"]) for row in channels]
    return _hbars("chart-channels", "Opportunity rate by source, with 95% intervals (* too few leads)", rows,
                  maximum, intervals)


def calibration_chart(report: dict[str, Any]) -> str:
    size, pad = 300, 50
    height = size + pad + 40
    body = [_text(10, 20, f"Calibration: observed {report['calibration']['outcome']} rate by lead-score decile "
                          f"(Brier {report['calibration']['brier']})", size=14, weight="bold")]
    x0, y0 = pad + 20, 30 + size

    def point(p: float, q: float) -> tuple[float, float]:
        return x0 + p * size, y0 - q * size

    body.append(f'<rect x="{x0}" y="{y0 - size}" width="{size}" height="{size}" fill="none" stroke="{_GRID}"/>')
    body.append(f'<line x1="{x0}" y1="{y0}" x2="{x0 + size}" y2="{y0 - size}" stroke="#999" stroke-dasharray="4 3"/>')
    for tick in (0, 0.5, 1):
        body.append(_text(x0 + tick * size, y0 + 16, f"{tick:.0%}", "middle", 10))
        body.append(_text(x0 - 6, y0 - tick * size + 4, f"{tick:.0%}", "end", 10))
    body.append(_text(x0 + size / 2, y0 + 32, "lead score / 100", "middle", 11))
    points = []
    for d in report["calibration"]["deciles"]:
        if not d["n"] or d["predicted"] is None:
            continue
        x, y = point(d["predicted"], d["rate"])
        _, lo = point(0, d["ci_low"])
        _, hi = point(0, d["ci_high"])
        body.append(f'<line x1="{x:.1f}" y1="{lo:.1f}" x2="{x:.1f}" y2="{hi:.1f}" stroke="{_SECOND}"/>')
        body.append(f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="{3 + min(d["n"], 400) ** 0.5 / 4:.1f}" '
                    f'fill="{_BAR}"/>')
        points.append(f"{x:.1f},{y:.1f}")
    if points:
        body.append(f'<polyline points="{" ".join(points)}" fill="none" stroke="{_BAR}" stroke-width="2"/>')
    return _svg("chart-calibration", height, body, "calibration curve")


def stall_chart(report: dict[str, Any]) -> str:
    rows, maximum = [], 1
    for stage, info in report["stalls"]["by_stage"].items():
        for item in info["unmet"][:5]:
            rows.append((f"{stage.upper()}: {item['criterion']}", item["leads"], f"{item['leads']} ({item['share']:.0%})"))
            maximum = max(maximum, item["leads"])
    if not rows:
        rows = [("no stalled leads", 0, "")]
    return _hbars("chart-stalls", f"Stalled leads by unmet criterion (no progress in "
                                  f"{report['stalls']['stall_days']:g} days)", rows, maximum)


# --------------------------------------------------------------------------- HTML


_STYLE = ("body{font-family:sans-serif;margin:24px;color:#222;max-width:1000px}table{border-collapse:collapse;"
          "margin:8px 0 20px}td,th{border:1px solid #ccd;padding:3px 8px;font-size:13px}th{background:#eef1f6}"
          "td.n{text-align:right}.warn{color:#a33}figure{margin:12px 0 24px}")


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f'<td class="n">{escape(str(c))}</td>' if isinstance(c, (int, float))
                                    else f"<td>{escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render_html(report: dict[str, Any]) -> str:
    """One HTML file: the charts inline as SVG, the tables, the suggestions with their warnings."""
    channels = _table(["source", "leads", "SQL rate", "opportunity rate", "won rate", "won 95% CI", "enough data"],
                      [[r["source"], r["leads"], _pct(r["sql_rate"]), _pct(r["opportunity_rate"]), _pct(r["won_rate"]),
                        f"{_pct(r['ci_low'])}–{_pct(r['ci_high'])}", "yes" if r["enough_data"] else "no"]
                       for r in report["channels"]])
    traits = _table(["trait", "value", "moved forward", "stalled", "lift"],
                    [[t["trait"], t["value"], _pct(t["share_moved"]), _pct(t["share_stalled"]), t["lift"]]
                     for t in report["stalls"]["traits"]])
    suggestions = "".join(
        f"<li>{escape(s['change'])} — {escape(s['evidence'])} (n = {s['n']})"
        + (f' <span class="warn">Warning: {escape(s["warning"])}.</span>' if s.get("warning") else "") + "</li>"
        for s in report["suggestions"]) or "<li>none</li>"
    title = f"Qualification report: {report.get('crm', '')}"
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">"
            f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>"
            f"<h1>{escape(title)}</h1><p>{report['leads']} leads; window {escape(str(report.get('since') or 'beginning'))}"
            f" → {escape(str(report.get('until') or 'now'))}; model {escape(str(report.get('model_version', '')))}; "
            f"generated {escape(str(report.get('generated_at', '')))}.</p>"
            f"<figure>{funnel_chart(report)}</figure><figure>{channel_chart(report)}</figure>{channels}"
            f"<figure>{calibration_chart(report)}</figure><figure>{stall_chart(report)}</figure>"
            f"<h2>Traits: moved forward vs stalled</h2>{traits}<h2>Suggestions</h2><ul>{suggestions}</ul>"
            "</body></html>\n")
