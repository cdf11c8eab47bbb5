"""An event acknowledged by the SQLite store survives SIGKILL of the writer process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from codeintegrity.events.schema import KINDS
from codeintegrity.events.store import EventStore

ROOT = Path(__file__).resolve().parents[2]

WRITER = r"""
import sys
from codeintegrity.events.pipeline import open_pipeline
from tests.events.reports import tampered_report

def acknowledged(uri, events):
    if uri.startswith("sqlite:"):
        sys.stdout.write("".join(f"{e.record_id} {e.event_id}\n" for e in events))
        # (record IDs are per channel; the event ID tells the channel)
        sys.stdout.flush()

pipeline = open_pipeline([], store_path=sys.argv[1], on_delivered=acknowledged)
n = 0
while True:
    pipeline.emit_report(tampered_report(f"/k/{n}.exe"))
    n += 1
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)")
def test_every_acknowledged_event_survives_kill9(tmp_path: Path):
    store_path = tmp_path / "events.sqlite3"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(store_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env=env,
        text=True,
    )
    acked: dict[tuple[str, int], int] = {}
    deadline = time.monotonic() + 60
    try:
        assert proc.stdout is not None
        while len(acked) < 3000 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            record_id, event_id = map(int, line.split())
            acked[(KINDS[event_id].channel, record_id)] = event_id
    finally:
        proc.send_signal(signal.SIGKILL)  # mid-stream: the writer is still committing batches
        proc.wait(10)
    stderr = proc.stderr.read() if proc.stderr else ""
    assert proc.returncode == -signal.SIGKILL, stderr
    assert len(acked) >= 3000, stderr
    with EventStore(store_path) as store:
        stored = {(e.channel, e.record_id): e.event_id for e in store.query()}
    missing = set(acked) - set(stored)
    assert not missing, f"{len(missing)} acknowledged events lost"
    assert all(stored[r] == e for r, e in acked.items())
    # Record IDs are dense from 1 in each channel: nothing acknowledged was ever rolled back.
    for channel in {channel for channel, _ in acked}:
        numbers = sorted(n for c, n in acked if c == channel)
        assert numbers == list(range(1, len(numbers) + 1))
