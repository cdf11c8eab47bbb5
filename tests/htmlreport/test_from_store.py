"""The store summary against what was verified, filters, policy denials and broken stores."""

from __future__ import annotations

import socket
import sqlite3
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from codeintegrity.events.build import Host, common_name, events_for_report
from codeintegrity.events.store import EventStore
from codeintegrity.htmlreport.from_store import ReportInputError, summarize_store
from codeintegrity.report import Decision, Report
from tests.events.reports import tampered_report, unsigned_driver_report


def test_store_summary_matches_the_verified_files(verified_run):
    summary = summarize_store(verified_run.store)
    with_events = [r for r in verified_run.reports if r["event_ids"]]
    # Only files that raised events are in a store; each is one file in the summary.
    assert summary.files == len(with_events) > 5
    assert summary.valid_known is False
    expected = Counter(r["status"] for r in with_events)
    for status in ("invalid", "unsigned", "malformed"):
        assert summary.by_status[status] == expected.get(status, 0)
    # One Security event per distinct ID of each report.
    security = Counter(i for r in with_events for i in r["event_ids"])
    for event_id in (5038, 6281, 6410):
        assert summary.event_counts.get(event_id, 0) == security.get(event_id, 0)
    assert summary.event_counts[5056] == 1  # the self-test: an event, not a file
    assert summary.event_count == sum(summary.event_counts.values())

    # One 3089 per signature (one for an unsigned file) after each CodeIntegrity event it
    # describes: the 3033/3004/3023/3036 of a hash failure and the 3063 of a load requirement.
    def described(ids: list[int]) -> int:
        return max(1, bool({5038, 6281} & set(ids)) + (6410 in ids))

    assert summary.event_counts[3089] == sum(
        max(1, len(r["signatures"])) * described(r["event_ids"]) for r in with_events
    )
    # The timeline holds every event exactly once.
    assert summary.timeline is not None
    assert {i: sum(c) for i, c in summary.timeline.series.items()} == summary.event_counts
    assert summary.first <= summary.last
    # Signers: the primary signer of each failing signed file, with its issuer from 3089.
    signers = {s.publisher: s for s in summary.signers}
    expected_signers = Counter(
        common_name(r["signatures"][0]["signer"]) for r in with_events if r["signatures"]
    )
    assert {name: s.files for name, s in signers.items()} == dict(expected_signers)
    publisher = signers["Throwaway Test Publisher"]
    assert publisher.issuer == "Throwaway Test Code Signing Root CA"
    assert publisher.trusted is True
    # The failing list names every file, most severe first, with its computer and events.
    assert {f.path for f in summary.failing} == {r["path"] for r in with_events}
    order = ["malformed", "invalid", "unsigned"]
    ranks = [order.index(f.status) for f in summary.failing]
    assert ranks == sorted(ranks)
    hostile = next(f for f in summary.failing if f.path == verified_run.hostile_path)
    assert set(hostile.event_ids) >= {3089, 5038, 6281}
    assert "signature: invalid hash" in hostile.reasons
    assert [c.name for c in summary.computers] == [socket.gethostname()]
    assert summary.computers[0].files == summary.files
    reasons = {r.label: r.files for r in summary.reasons}
    assert reasons["signature: invalid hash"] >= 2


def _store_with_hosts(path, base: datetime) -> None:
    """Three computers over three days, one enforce denial and one audit denial."""
    denied = replace(
        tampered_report("/d/denied.sys"),
        decision=Decision(False, "enforce", "Blocklist", "{11111111-2222-3333-4444-555555555555}"),
    )
    audited = replace(
        unsigned_driver_report("/d/audited.sys"),
        decision=Decision(False, "audit", "Blocklist", "{11111111-2222-3333-4444-555555555555}"),
    )
    plan: list[tuple[str, int, Report]] = [
        ("alpha", 0, tampered_report("/a/one.exe")),
        ("alpha", 0, unsigned_driver_report("/a/two.sys")),
        ("beta", 1, denied),
        ("gamma", 2, audited),
        ("gamma", 2, tampered_report("/g/three.exe")),
    ]
    with EventStore(path) as store:
        for computer, day, report in plan:
            host = Host(computer=computer, process_id=1, process_name="ci", user_name="u")
            store.append(events_for_report(report, host=host, when=base + timedelta(days=day)))


def test_filters_by_time_and_computer_and_policy_denials(tmp_path):
    base = datetime(2026, 3, 1, 12, tzinfo=UTC)
    path = tmp_path / "events.sqlite3"
    _store_with_hosts(path, base)

    everything = summarize_store(path)
    assert everything.files == 5
    assert everything.denied == 1 and everything.audit_denied == 1
    assert everything.event_counts[3077] == 1 and everything.event_counts[3076] == 1
    assert everything.policies == [("Blocklist", "{11111111-2222-3333-4444-555555555555}")]
    assert {c.name: c.files for c in everything.computers} == {"alpha": 2, "beta": 1, "gamma": 2}
    beta = next(c for c in everything.computers if c.name == "beta")
    assert beta.denied == 1 and beta.audit_denied == 0
    assert {r.label: r.files for r in everything.reasons}["policy: Blocklist"] == 2
    assert everything.first == base and everything.last == base + timedelta(days=2)

    later = summarize_store(path, since=base + timedelta(hours=12))
    assert later.files == 3
    assert {c.name for c in later.computers} == {"beta", "gamma"}
    window = summarize_store(
        path, since=base + timedelta(hours=12), until=base + timedelta(days=1, hours=1)
    )
    assert [f.path for f in window.failing] == ["/d/denied.sys"]
    gamma = summarize_store(path, computers=["gamma"])
    assert gamma.files == 2 and gamma.audit_denied == 1 and gamma.denied == 0
    assert {f.computer for f in gamma.failing} == {"gamma"}
    assert sum(sum(c) for c in gamma.timeline.series.values()) == gamma.event_count
    nobody = summarize_store(path, computers=["delta"])
    assert nobody.files == 0 and nobody.event_count == 0 and nobody.timeline is None


def test_the_store_is_not_changed(tmp_path):
    path = tmp_path / "events.sqlite3"
    _store_with_hosts(path, datetime(2026, 3, 1, tzinfo=UTC))
    before = path.read_bytes()
    summarize_store(path)
    assert path.read_bytes() == before


def test_unreadable_stores_are_one_line_errors(tmp_path):
    with pytest.raises(ReportInputError, match="no event store"):
        summarize_store(tmp_path / "missing.sqlite3")
    other = tmp_path / "other.sqlite3"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(ReportInputError, match="not a codeintegrity event store"):
        summarize_store(other)
    broken = tmp_path / "broken.sqlite3"
    with EventStore(broken) as store:
        store.append(events_for_report(tampered_report("/x.exe")))
    db = sqlite3.connect(broken)
    db.execute("UPDATE events SET body = 'not json {' WHERE event_id = 5038")
    db.commit()
    db.close()
    with pytest.raises(ReportInputError, match="cannot read event store"):
        summarize_store(broken)


def test_a_context_that_is_not_json_is_counted_as_unknown(tmp_path):
    path = tmp_path / "events.sqlite3"
    with EventStore(path) as store:
        store.append(events_for_report(tampered_report("/x.exe")))
        store.append(events_for_report(tampered_report("/y.exe")))
    db = sqlite3.connect(path)
    # Cut the context of one file's representative event after its status marker.
    db.execute(
        "UPDATE events SET body = substr(body, 1, instr(body, '[\"codeintegrity.status\"') + 30)"
        " WHERE event_id = 5038 AND path = '/x.exe'"
    )
    db.commit()
    db.close()
    summary = summarize_store(path)
    assert summary.by_status.get("unknown") == 1
    assert summary.files == 2 and summary.by_status["invalid"] == 1
    assert {f.path: f.status for f in summary.failing} == {"/x.exe": "unknown", "/y.exe": "invalid"}
