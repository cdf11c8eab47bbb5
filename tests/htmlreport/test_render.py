"""The HTML itself: escaped, self-contained, small, and complete."""

from __future__ import annotations

import html
import re
import subprocess
import sys

from codeintegrity.findings import Finding, FindingCode
from codeintegrity.htmlreport import ResultsCollector, write_report
from codeintegrity.report import Report, Status
from tests.events.reports import tampered_report

SCRIPT = '<script>alert("x")</script>'


def test_attacker_controlled_names_are_escaped(tmp_path):
    hostile_path = f"C:\\{SCRIPT}\\a\"b'c&d<img src=x onerror=alert(1)>.sys"
    hostile_detail = "</td></tr></table><script>alert(2)</script>"
    report = Report(
        hostile_path,
        Status.MALFORMED,
        findings=(Finding(FindingCode.CERT_TABLE_MALFORMED, hostile_detail),),
    )
    out = tmp_path / "r.html"
    write_report([report, tampered_report("/ok/bad.exe")], out)
    text = out.read_text(encoding="utf-8")
    # No markup of the input survives: no script element, no img element (and so no handler).
    assert "<script" not in text.lower()
    assert "<img" not in text.lower()
    # ... and the text is all there, escaped, for a reader to see.
    assert hostile_path not in text and hostile_detail not in text
    assert hostile_path in html.unescape(text)
    assert hostile_detail in html.unescape(text)


def test_the_page_is_self_contained(tmp_path, verified_run):
    out = tmp_path / "r.html"
    write_report(verified_run.store, out)
    text = out.read_text(encoding="utf-8")
    assert 'http-equiv="Content-Security-Policy"' in text and "default-src 'none'" in text
    # No external resource: links only to fragments of the page itself (SVG markers), and
    # the only URLs are the SVG/XLink namespace names.
    assert re.search(r"\bhref=\"#", text)
    assert not re.search(r"\b(src|href)\s*=\s*\"(?!#)", text)
    urls = set(re.findall(r"https?://[^\s\"'<>]+", text))
    assert urls <= {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}
    assert text.count("<svg ") == 2  # verdicts and timeline, inline
    for heading in (
        "Events by ID", "Top reasons", "Signers", "Failing files", "Computers", "Provenance",
    ):  # fmt: skip
        assert f"{heading}" in text
    assert "5038" in text and "Throwaway Test Publisher" in text


def test_a_hundred_thousand_files_stay_under_two_megabytes(tmp_path):
    collector = ResultsCollector("100k")
    bad = tampered_report("/x.exe")
    valid = Report("/v.exe", Status.VALID)
    for n in range(100_000):
        if n % 4:
            collector.add(Report(f"/v/{n}.dll", Status.VALID, signatures=valid.signatures))
        else:
            collector.add(
                Report(
                    f"C:\\Windows\\System32\\drivers\\vendor{n % 997}\\file{n:06d}.sys",
                    Status.INVALID,
                    findings=bad.findings,
                    signatures=bad.signatures,
                )
            )
    out = tmp_path / "r.html"
    summary = write_report(collector, out)
    assert summary.files == 100_000 and summary.failing_total == 25_000
    size = out.stat().st_size
    assert 20_000 < size <= 2 * 1024 * 1024, size
    assert "Showing the 200 most severe of 25" in out.read_text(encoding="utf-8")


def test_reports_do_not_slow_verify_start_up():
    """Importing the CLI (and this package) loads neither matplotlib nor Jinja2."""
    code = (
        "import sys, codeintegrity.cli.main, codeintegrity.cli.report_cmd, "
        "codeintegrity.htmlreport; "
        "print(sorted(m for m in ('matplotlib', 'jinja2') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
