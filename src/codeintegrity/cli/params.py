"""Command-line value parsers shared by the subcommands, and their click callbacks."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import click


def parse_iso_time(text: str) -> datetime:
    """ISO 8601 time, "Z" accepted, naive meaning UTC. Raises ValueError."""
    text = text.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


_SPAN = re.compile(r"(\d+)([smhdw])")
_SPAN_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_time_or_span(text: str, now: datetime | None = None) -> datetime:
    """ISO 8601 (naive means UTC) or a span back from ``now``: 30s, 15m, 2h, 7d, 1w.
    Raises ValueError."""
    span = _SPAN.fullmatch(text.strip())
    if span:
        back = timedelta(**{_SPAN_UNITS[span.group(2)]: int(span.group(1))})
        return (now or datetime.now(UTC)) - back
    return parse_iso_time(text)


_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """A byte count: 4096, 64K, 10M, 2G (binary units; a trailing B or iB is accepted).
    Raises ValueError."""
    value = text.strip().lower().removesuffix("ib").removesuffix("b")
    unit = value[-1:] if value[-1:] in _SIZE_UNITS else ""
    number = value[: len(value) - len(unit)]
    if not number.isdigit():
        raise ValueError(text)
    return int(number) * _SIZE_UNITS[unit]


def iso_time(_ctx: click.Context, _param: click.Parameter, value: str | None) -> datetime | None:
    """click callback: an ISO 8601 time."""
    if value is None:
        return None
    try:
        return parse_iso_time(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 time") from None


def time_or_span(
    _ctx: click.Context, _param: click.Parameter, value: str | None
) -> datetime | None:
    """click callback: an ISO 8601 time or a span back from now (2h)."""
    if value is None:
        return None
    try:
        return parse_time_or_span(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither ISO 8601 nor a span like 2h") from None


def size(_ctx: click.Context, _param: click.Parameter, value: str | None) -> int | None:
    """click callback: a byte count with an optional K, M, G suffix."""
    if value is None:
        return None
    try:
        return parse_size(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a size (e.g. 4096, 64K, 10M, 2G)") from None


def check_nt_paths(
    _ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]
) -> tuple[str, ...]:
    """Click callback for --nt-path: each value must be MOUNT=\\Device\\HarddiskVolumeN."""
    from ..events.paths import nt_path_map

    try:
        nt_path_map(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value
