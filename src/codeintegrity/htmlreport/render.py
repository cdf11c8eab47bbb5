"""Render a :class:`Summary` to one self-contained HTML file (Jinja2, autoescaped)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ..errors import ConfigError
from .model import STATUSES

if TYPE_CHECKING:
    from .model import Summary

EVENT_MEANINGS = {
    5038: "image hash of a file is not valid",
    6281: "page hashes of an image are not valid",
    6410: "file does not meet the security requirements to load",
    5057: "a cryptographic primitive failed",
    5056: "cryptographic self-test",
    4612: "audit events were discarded",
    3033: "image did not meet the signing level requirements",
    3063: "image did not meet the security requirements (shared sections)",
    3076: "policy would block (audit mode)",
    3077: "policy blocked (enforce mode)",
    3089: "signature information",
}
_SOURCE_LABELS = {"store": "Event store", "results": "Verification results"}


def _when(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _day(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d")


def _num(value: int) -> str:
    return f"{value:,}".replace(",", "\u202f")  # narrow no-break space: 1 000 000


class MissingDependency(ConfigError):
    """matplotlib or Jinja2 is not installed (they are the optional extra `report`)."""

    reference = "report-dependency-missing"


def render_html(summary: Summary) -> str:
    try:
        import matplotlib  # noqa: F401 - checked here, used by .charts
        from jinja2 import Environment, PackageLoader, StrictUndefined
    except ImportError as exc:
        raise MissingDependency(
            f"reports need {exc.name or 'matplotlib and Jinja2'}: "
            "pip install 'codeintegrity[report]'"
        ) from None

    from .charts import timeline_chart, verdict_chart

    env = Environment(
        loader=PackageLoader("codeintegrity.htmlreport", "templates"),
        autoescape=True,  # every value is escaped unless marked safe (only our SVG is)
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        when=_when,
        day=_day,
        num=_num,
        event_meaning=lambda event_id: EVENT_MEANINGS.get(event_id, ""),
        source_label=lambda kind: _SOURCE_LABELS.get(kind, kind),
    )
    template = env.get_template("report.html.j2")
    timeline = summary.timeline
    return template.render(
        s=summary,
        statuses=STATUSES,
        verdict_svg=verdict_chart(summary),
        timeline_svg=timeline_chart(timeline) if timeline and timeline.series else "",
        show_computer=any(f.computer for f in summary.failing),
        show_time=any(f.time for f in summary.failing),
    )
