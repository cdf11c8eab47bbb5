"""The shared command-line value parsers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from codeintegrity.cli.params import parse_iso_time, parse_size, parse_time_or_span


def test_a_span_counts_back_from_now_and_an_iso_time_is_taken_as_given():
    now = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
    assert parse_time_or_span("2h", now) == now - timedelta(hours=2)
    assert parse_time_or_span(" 1w ", now) == now - timedelta(weeks=1)
    assert parse_time_or_span("2026-01-01T00:00:00", now) == datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_iso_time("2026-01-01T00:00:00Z") == datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(ValueError):
        parse_time_or_span("yesterday-ish", now)
    with pytest.raises(ValueError):
        parse_time_or_span("2y", now)


def test_sizes_take_binary_units():
    assert parse_size("64K") == 64 * 1024 and parse_size("2GiB") == 2 << 30
    with pytest.raises(ValueError):
        parse_size("lots")
