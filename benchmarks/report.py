"""Benchmark `codeintegrity report` over a large event store.

Usage: python benchmarks/report.py [--events 1000000] [--store PATH] [--keep]

Builds a store of N events the way `verify` writes them: the events of the test fixtures' failing
files (verified here, in process) are the templates, replayed for distinct file paths, spread
over 7 days and 5 computers, and inserted with one executemany per 50,000 rows. Then it times
`write_report(store)` (the SQL aggregation, the charts and the HTML) and prints the wall and
CPU seconds against the 10 s target (one thread: CPU time is what an idle machine would take).
A store given with --store that already exists is reused.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from codeintegrity.authenticode.trust import TrustStore  # noqa: E402
from codeintegrity.events.build import Host, events_for_report  # noqa: E402
from codeintegrity.events.store import EventStore  # noqa: E402
from codeintegrity.options import VerifyOptions  # noqa: E402
from codeintegrity.report import Decision  # noqa: E402
from codeintegrity.verify import verify_path  # noqa: E402

TARGET_SECONDS = 10.0
BATCH = 50_000
COMPUTERS = ("ws-0142.corp.example", "ws-0388.corp.example", "build-07", "dc-01", "kiosk-3")
SPAN_US = 7 * 86400 * 1_000_000
START_US = 1_780_000_000 * 1_000_000  # 2026-05-28, any fixed instant


def template_events() -> list[list[tuple[int, str, str, str, str]]]:
    """Per failing fixture: its events as (event_id, channel, outcome, path, body) rows."""
    trust = TrustStore.default() | TrustStore.from_paths([str(ROOT / "tests/data/pki/ca.pem")])
    options = VerifyOptions(trust=trust)
    host = Host(
        computer="TEMPLATE-HOST", process_id=4242, process_name="codeintegrity", user_name="bench"
    )
    out = []
    for path in sorted((ROOT / "tests/data/fixtures").iterdir()):
        if not path.is_file():
            continue
        try:
            report = verify_path(path, options)
        except OSError:
            continue
        variants = [replace(report, path="TEMPLATE-PATH")]
        if not report.ok:  # the same failure denied by a policy, in enforce and audit mode
            variants += [
                replace(variants[0], decision=Decision(False, mode, "Bench", "{0}"))
                for mode in ("enforce", "audit")
            ]
        for variant in variants:
            events = events_for_report(variant, host=host)
            if events:
                out.append(
                    [
                        (e.event_id, e.channel, e.outcome, e.to_json(with_record_id=False))
                        for e in events
                    ]
                )
    return out


def build_store(path: Path, count: int) -> None:
    templates = template_events()
    EventStore(path, synchronous="NORMAL").close()  # the schema, as the project writes it
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA synchronous=OFF")
    step = SPAN_US // count
    rows: list[tuple[int, str, int, str, str, str, str]] = []
    written = n = 0
    while written < count:
        events = templates[n % len(templates)]
        folder = ("Windows\\System32\\drivers", "Program Files\\Vendor", "Users\\Public")[n % 3]
        file_path = f"C:\\{folder}\\file{n:07d}.{'sys' if n % 3 == 0 else 'dll'}"
        path_json = json.dumps(file_path)[1:-1]
        name_json = f"file{n:07d}.{'sys' if n % 3 == 0 else 'dll'}"
        computer = COMPUTERS[(n * 7) % len(COMPUTERS)]
        activity = f"{{{n:08x}-0000-4000-8000-{n:012x}}}"
        for event_id, channel, outcome, body in events:
            if written >= count:
                break
            time_us = START_US + written * step
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time_us // 1_000_000))
            text = (
                body.replace('"file.name","TEMPLATE-PATH"', f'"file.name","{name_json}"')
                .replace('"TEMPLATE-PATH"', f'"{path_json}"')
                .replace("TEMPLATE-HOST", computer)
            )
            text = (
                text[: text.index('"t":"') + 5]
                + f"{stamp}.0000000Z"
                + text[text.index('Z"', text.index('"t":"')) + 1 :]
            )
            first_a = text.find('"a":"')
            if first_a > 0:
                end = text.index('"', first_a + 5)
                text = text[: first_a + 5] + activity + text[end:]
            rows.append((event_id, channel, time_us, outcome, file_path, activity, text))
            written += 1
        n += 1
        if len(rows) >= BATCH:
            db.executemany(
                "INSERT INTO events (event_id, channel, time_us, outcome, path, activity_id, body)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            rows.clear()
    if rows:
        db.executemany(
            "INSERT INTO events (event_id, channel, time_us, outcome, path, activity_id, body)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--store", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the store and the report")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ci-report-bench-"))
    store = args.store or work / "events.sqlite3"
    if not store.exists():
        started = time.perf_counter()
        build_store(store, args.events)
        print(
            f"built {args.events:,} events in {time.perf_counter() - started:.1f} s "
            f"({store.stat().st_size / 1e6:.0f} MB)"
        )
    from codeintegrity.htmlreport import write_report

    out = work / "report.html"
    load = os.getloadavg()[0]
    started, cpu = time.perf_counter(), time.process_time()
    summary = write_report(store, out)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    print(
        f"report of {summary.event_count:,} events, {summary.file_count:,} files: "
        f"{elapsed:.2f} s wall ({elapsed / TARGET_SECONDS:.2f}x the {TARGET_SECONDS:.0f} s "
        f"target), {cpu:.2f} s CPU ({cpu / TARGET_SECONDS:.2f}x), "
        f"{out.stat().st_size / 1e3:.0f} KB HTML; load average {load:.1f} on "
        f"{os.cpu_count()} cores (wall time on a busy machine is mostly waiting)"
    )
    if args.keep:
        print(f"kept {work}")
    else:
        for item in work.iterdir():
            item.unlink()
        work.rmdir()


if __name__ == "__main__":
    main()
