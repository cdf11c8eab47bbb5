"""Regenerate docs/report-screenshot.png: a report of a small demo store, shot in Chromium.

Usage: python -m tests.htmlreport.make_screenshot [OUT.png]

The demo store holds the real events of the test fixtures' failing files, verified here and
recorded as if raised on three computers over five days, with a policy denying files in
enforce mode on one computer and in audit mode on another (a quarter of their files).
"""

from __future__ import annotations

import io
import sys
import tempfile
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from codeintegrity.authenticode.trust import TrustStore
from codeintegrity.events.build import Host, events_for_report
from codeintegrity.events.store import EventStore
from codeintegrity.htmlreport import write_report
from codeintegrity.options import VerifyOptions
from codeintegrity.report import Decision
from codeintegrity.verify import verify_path
from tests.conftest import FIXTURES, PKI, SAMPLES
from tests.htmlreport.browser import Chromium, file_url

ROOT = Path(__file__).resolve().parents[2]
COMPUTERS = ("ws-0142.corp.example", "build-07.corp.example", "kiosk-3.corp.example")


def build_demo_store(path: Path) -> None:
    trust = TrustStore.default() | TrustStore.from_paths([str(PKI / "ca.pem")])
    options = VerifyOptions(trust=trust)
    files = sorted(
        p
        for p in [*FIXTURES.iterdir(), *SAMPLES.rglob("*")]
        if p.is_file() and p.read_bytes()[:2] == b"MZ"  # PE files only, as `verify` walks
    )
    reports = []
    for file in files:
        try:
            reports.append(verify_path(file, options))
        except OSError:
            continue
    failing = [r for r in reports if not r.ok]
    start = datetime(2026, 11, 23, 8, tzinfo=UTC)
    policy = "{7b5e1a0c-3f7d-4c55-9e0a-6e2d1b8f4a21}"
    with EventStore(path) as store:
        for day in range(5):
            for n, computer in enumerate(COMPUTERS):
                host = Host(
                    computer=computer, process_id=4000 + n, process_name="ci", user_name="u"
                )
                for k, report in enumerate(failing[(day + n) % 4 :: 2 + (day + n) % 3]):
                    when = start + timedelta(days=day, hours=2 * n + k * 0.05)
                    if k % 4 == 1 and n < 2:
                        mode = "enforce" if n == 0 else "audit"
                        report = replace(
                            report, decision=Decision(False, mode, "Driver blocklist", policy)
                        )
                    store.append(events_for_report(report, host=host, when=when))


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "report-screenshot.png"
    with tempfile.TemporaryDirectory() as work:
        store = Path(work) / "events.sqlite3"
        build_demo_store(store)
        html = Path(work) / "report.html"
        write_report(store, html)
        with Chromium() as browser:
            page = browser.load(file_url(html), width=1200, height=1150)
        if page.errors:
            raise SystemExit(f"console errors: {page.errors}")
    from PIL import Image

    image = Image.open(io.BytesIO(page.screenshot)).convert("RGB")
    image = image.resize((960, 920), Image.Resampling.LANCZOS)
    image = image.quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    image.save(out, optimize=True)
    print(f"wrote {out} ({out.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
