"""Summaries of verification results (JSON Lines and Report values)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from codeintegrity.findings import Finding, FindingCode
from codeintegrity.htmlreport import ResultsCollector
from codeintegrity.htmlreport.from_results import read_results, summarize_results
from codeintegrity.htmlreport.from_store import ReportInputError
from codeintegrity.htmlreport.model import TOP_FAILING
from codeintegrity.report import Decision, Report, Status
from tests.events.reports import tampered_report


def test_results_summary_matches_the_json_lines(verified_run):
    summary = summarize_results(read_results(verified_run.results))
    reports = verified_run.reports
    assert summary.files == len(reports)
    assert summary.valid_known
    assert summary.by_status == {
        s: Counter(r["status"] for r in reports).get(s, 0)
        for s in ("valid", "invalid", "unsigned", "malformed")
    }
    assert summary.event_counts == dict(
        sorted(Counter(i for r in reports for i in r["event_ids"]).items())
    )
    # Reasons are finding codes counted once per file, with their event and summary.
    codes = Counter(
        code
        for r in reports
        for code in {f["code"] for f in r["findings"] if f["severity"] != "info"}
    )
    assert {r.label: r.files for r in summary.reasons} == dict(codes)
    mismatch = next(r for r in summary.reasons if r.label == "image-hash.mismatch")
    assert mismatch.event_id == 5038 and mismatch.summary
    # Signers carry the root of their chain and how many of their files are valid.
    publisher = next(s for s in summary.signers if s.publisher == "Throwaway Test Publisher")
    assert publisher.root == "Throwaway Test Code Signing Root CA"
    assert publisher.valid_files is not None and publisher.valid_files > 0
    assert publisher.files == publisher.valid_files + publisher.invalid_files
    failing = [r for r in reports if r["status"] != "valid"]
    assert summary.failing_total == len(failing)
    assert {f.path for f in summary.failing} == {r["path"] for r in failing}
    hostile = next(f for f in summary.failing if f.path == verified_run.hostile_path)
    assert ("image-hash.mismatch", hostile.details[0][1]) in hostile.details
    assert summary.timeline is None  # JSON Lines carry no times
    assert summary.computers == []


def test_the_failing_list_keeps_the_most_severe_files_only():
    collector = ResultsCollector()
    broken = Finding(FindingCode.CERT_TABLE_MALFORMED, "cut")
    for n in range(3 * TOP_FAILING):
        collector.add(tampered_report(f"/t/{n:05d}.exe"))
    for n in range(5):
        collector.add(Report(f"/m/{n}.exe", Status.MALFORMED, findings=(broken,)))
    for n in range(10):
        collector.add(Report(f"/v/{n}.exe", Status.VALID))
    summary = collector.summary()
    assert summary.failing_total == 3 * TOP_FAILING + 5
    assert len(summary.failing) == TOP_FAILING
    assert [f.path for f in summary.failing[:5]] == [f"/m/{n}.exe" for n in range(5)]
    assert [f.path for f in summary.failing[5:]] == [
        f"/t/{n:05d}.exe" for n in range(TOP_FAILING - 5)
    ]


def test_decisions_times_and_computers_from_a_run():
    collector = ResultsCollector("verify run")
    start = datetime(2026, 5, 1, tzinfo=UTC)
    deny = Decision(False, "enforce", "P", "{0}")
    audit = Decision(False, "audit", "P", "{0}")
    allow = Decision(True, "enforce", "P", "{0}")
    collector.add(replace(tampered_report("/a.exe"), decision=deny), when=start, computer="h1")
    collector.add(
        replace(tampered_report("/b.exe"), decision=audit),
        when=start + timedelta(hours=1),
        computer="h2",
    )
    collector.add(
        Report("/c.exe", Status.VALID, decision=allow),
        when=start + timedelta(hours=2),
        computer="h2",
    )
    summary = collector.summary(fingerprints={"Trust anchors (SHA-256)": "ab" * 32})
    assert (summary.allowed, summary.denied, summary.audit_denied) == (1, 1, 1)
    assert summary.event_counts[3077] == 1 and summary.event_counts[3076] == 1
    assert summary.policies == [("P", "{0}")]
    assert summary.first == start and summary.last == start + timedelta(hours=1)
    assert sum(sum(c) for c in summary.timeline.series.values()) == summary.event_count
    assert {c.name: (c.files, c.denied, c.audit_denied) for c in summary.computers} == {
        "h1": (1, 1, 0),
        "h2": (2, 0, 1),
    }
    assert summary.fingerprints == {"Trust anchors (SHA-256)": "ab" * 32}


def test_bad_json_lines_name_the_line(tmp_path):
    path = tmp_path / "r.jsonl"
    good = json.dumps(Report("a", Status.VALID).to_dict())
    path.write_text(f"\n{good}\nnot json\n", encoding="utf-8")
    with pytest.raises(ReportInputError, match=r"r.jsonl:3: not JSON"):
        list(read_results(path))
    path.write_text(good.replace('"valid"', '"green"') + "\n", encoding="utf-8")
    with pytest.raises(ReportInputError, match=r"r.jsonl:1: .*status"):
        list(read_results(path))
    with pytest.raises(ReportInputError, match="cannot read"):
        list(read_results(tmp_path / "missing.jsonl"))


def test_a_verify_run_collected_as_verify_report_would(tmp_path):
    """The path `verify --report` takes: collect each report with its time and computer, then
    write with the run's trust and policy fingerprints."""
    import hashlib
    from pathlib import Path

    from codeintegrity.authenticode.trust import TrustStore
    from codeintegrity.htmlreport import fingerprints_for, write_report
    from codeintegrity.options import VerifyOptions
    from codeintegrity.verify import verify_path
    from tests.conftest import FIXTURES, PKI

    policy = Path(__file__).resolve().parents[2] / "examples" / "policy.toml"
    options = VerifyOptions(trust=TrustStore.from_paths([str(PKI / "ca.pem")]))
    collector = ResultsCollector("codeintegrity verify fixtures")
    start = datetime(2026, 6, 1, tzinfo=UTC)
    for n, name in enumerate(("t64_sha256.exe", "bad_flip_text.exe", "bad_truncate_cert.exe")):
        report = verify_path(FIXTURES / name, options)
        collector.add(report, when=start + timedelta(seconds=n), computer="host-a")
    prints = fingerprints_for(options, policy)
    assert prints["Trust anchors (SHA-256)"] == options.trust.key.hex()
    assert prints["Policy file (SHA-256)"].startswith(
        hashlib.sha256(policy.read_bytes()).hexdigest()
    )
    out = tmp_path / "run.html"
    summary = write_report(collector, out, fingerprints=prints)
    assert summary.by_status == {"valid": 1, "invalid": 1, "unsigned": 0, "malformed": 1}
    assert summary.timeline is not None and summary.computers[0].name == "host-a"
    text = out.read_text(encoding="utf-8")
    assert options.trust.key.hex() in text and "Policy file (SHA-256)" in text
