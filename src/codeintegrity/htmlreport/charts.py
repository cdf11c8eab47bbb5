"""The report's charts, drawn server-side to SVG with matplotlib's SVG backend.

Figures are built with ``matplotlib.figure.Figure`` directly (no pyplot, no global backend).

Text stays text (``svg.fonttype = none``): the SVG is a few kilobytes instead of glyph paths, and
it prints sharp. Labels are our own words and numbers only (statuses, event IDs, dates): nothing
from a file or a store reaches a chart, so no attacker-controlled string is drawn (matplotlib would
also read ``$...$`` in a label as math).
"""

from __future__ import annotations

import io
import re
from datetime import timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .model import Summary, Timeline

STATUS_COLORS = {
    "valid": "#2e7d32",
    "invalid": "#c62828",
    "unsigned": "#ef8f00",
    "malformed": "#6a1b9a",
    "unknown": "#757575",
}
DECISION_COLORS = {
    "allowed": "#66bb6a",
    "denied (enforce)": "#b71c1c",
    "would be denied (audit)": "#fb8c00",
}
# One colour per event ID, stable across reports (Security first, then CodeIntegrity details).
EVENT_COLORS = {
    5038: "#c62828",
    6281: "#ad1457",
    6410: "#6a1b9a",
    5057: "#4527a0",
    3077: "#37474f",
    3076: "#fb8c00",
    3033: "#ef9a9a",
    3063: "#ce93d8",
    3089: "#90a4ae",
    4612: "#795548",
    5056: "#00897b",
}
_FALLBACK = ("#1565c0", "#00838f", "#558b2f", "#9e9d24", "#4e342e")
_STYLE: Any = {  # matplotlib types rc keys as literals
    "svg.fonttype": "none",
    "svg.hashsalt": "codeintegrity-report",  # stable element ids: same input, same file
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Liberation Sans", "Arial", "Helvetica"],
    "font.size": 8.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.edgecolor": "#888888",
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "axes.titlelocation": "left",
}
_PROLOGUE = re.compile(r"^.*?(?=<svg\b)", re.DOTALL)
_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.DOTALL)  # RDF about the file


def _to_svg(figure: object, label: str) -> str:
    from matplotlib.figure import Figure

    assert isinstance(figure, Figure)
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    svg = _METADATA.sub("", _PROLOGUE.sub("", buffer.getvalue(), count=1), count=1)
    # Inline in HTML: no XML prologue; an accessible name; scale with the page.
    from markupsafe import escape

    return svg.replace("<svg ", f'<svg role="img" aria-label="{escape(label)}" class="chart" ', 1)


def verdict_chart(summary: Summary) -> str:
    """Horizontal bars: files per verdict, and per policy decision when a policy was applied."""
    import matplotlib
    from matplotlib.figure import Figure

    verdicts = [(s, n) for s, n in summary.by_status.items() if n or s != "unknown"]
    if not summary.valid_known:
        verdicts = [(s, n) for s, n in verdicts if s != "valid"]
    decisions: list[tuple[str, int]] = []
    if summary.policy_applied:
        if summary.source_kind == "results":
            decisions.append(("allowed", summary.allowed))
        decisions += [
            ("denied (enforce)", summary.denied),
            ("would be denied (audit)", summary.audit_denied),
        ]
    with matplotlib.rc_context(_STYLE):
        rows = len(verdicts) + len(decisions)
        figure = Figure(figsize=(4.2, 0.32 * rows + 0.7), layout="constrained")
        if decisions:
            top, bottom = figure.subplots(
                2, 1, height_ratios=[len(verdicts), len(decisions)], sharex=True
            )
            _bars(top, verdicts, STATUS_COLORS, "Files by verdict")
            _bars(bottom, decisions, DECISION_COLORS, "Policy decisions")
        else:
            _bars(figure.subplots(), verdicts, STATUS_COLORS, "Files by verdict")
        return _to_svg(figure, "Bar chart of files by verdict and policy decision")


def _bars(axes: object, rows: list[tuple[str, int]], colors: dict[str, str], title: str) -> None:
    from matplotlib.axes import Axes

    assert isinstance(axes, Axes)
    labels = [label for label, _ in rows]
    values = [value for _, value in rows]
    positions = list(range(len(rows)))
    bars = axes.barh(positions, values, color=[colors.get(x, "#607d8b") for x in labels])
    axes.set_yticks(positions, labels)
    axes.invert_yaxis()
    axes.set_title(title)
    axes.bar_label(bars, labels=[f"{v:,}" for v in values], padding=3)
    axes.margins(x=0.12)
    axes.xaxis.set_visible(False)
    axes.spines["bottom"].set_visible(False)


def timeline_chart(timeline: Timeline) -> str:
    """Stacked bars: events per event ID in each time bucket."""
    import matplotlib
    import matplotlib.dates as mdates
    from matplotlib.figure import Figure

    buckets = len(next(iter(timeline.series.values())))
    step = timedelta(seconds=timeline.bucket_seconds)
    starts = mdates.date2num([timeline.start + step * i for i in range(buckets)])
    width = timeline.bucket_seconds / 86400  # in days, matplotlib's date unit
    with matplotlib.rc_context(_STYLE):
        figure = Figure(figsize=(6.6, 2.6), layout="constrained")
        axes = figure.subplots()
        base = [0] * buckets
        ordered = sorted(timeline.series, key=lambda i: (i not in EVENT_COLORS, i))
        for n, event_id in enumerate(ordered):
            counts = timeline.series[event_id]
            color = EVENT_COLORS.get(event_id, _FALLBACK[n % len(_FALLBACK)])
            axes.bar(
                starts, counts, width=width * 0.9, bottom=base, align="edge",
                color=color, label=str(event_id),
            )  # fmt: skip
            base = [b + c for b, c in zip(base, counts, strict=True)]
        axes.set_title("Events by ID over time (UTC)")
        axes.set_ylabel("events")
        axes.xaxis_date()
        locator = mdates.AutoDateLocator(minticks=3, maxticks=8)
        axes.xaxis.set_major_locator(locator)
        axes.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        axes.legend(title="event ID", loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
        axes.grid(axis="y", color="#e0e0e0", linewidth=0.6)
        axes.set_axisbelow(True)
        return _to_svg(figure, "Stacked bar chart of events by event ID over time")
