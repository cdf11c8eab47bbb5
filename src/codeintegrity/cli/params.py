"""Command-line value parsers shared by the subcommands."""

from __future__ import annotations

from datetime import UTC, datetime


def parse_iso_time(text: str) -> datetime:
    """ISO 8601 time, "Z" accepted, naive meaning UTC. Raises ValueError."""
    text = text.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


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
