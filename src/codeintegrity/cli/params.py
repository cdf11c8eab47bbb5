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
