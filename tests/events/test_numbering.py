"""EventRecordIDs: one sequence per channel, reserved in the store, never handed out twice."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

from codeintegrity.events.build import events_for_report
from codeintegrity.events.evtx_sink import channel_file_name
from codeintegrity.events.numbering import LocalNumbers, StoreNumbers
from codeintegrity.events.pipeline import open_pipeline
from codeintegrity.events.schema import CI_CHANNEL, SECURITY_CHANNEL
from codeintegrity.events.store import EventStore

from ..conftest import FIXTURES
from .evtx_readers import READERS
from .reports import HOST, denied_report, tampered_report

ROOT = Path(__file__).resolve().parents[2]


def test_local_numbers_count_each_channel_from_one() -> None:
    numbers = LocalNumbers()
    events = numbers.assign(events_for_report(tampered_report(), host=HOST))
    # 3089, 3033 in CodeIntegrity/Operational; 5038, 6281 in Security
    assert [(e.channel, e.record_id) for e in events] == [
        (CI_CHANNEL, 1), (CI_CHANNEL, 2), (SECURITY_CHANNEL, 1), (SECURITY_CHANNEL, 2),
    ]  # fmt: skip
    assert numbers.next(SECURITY_CHANNEL) == 3


def test_two_numberings_of_one_store_interleave_without_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "events.sqlite3"
    EventStore(path).close()
    first, second = StoreNumbers(path), StoreNumbers(path)
    seen: list[int] = []
    for _ in range(50):  # blocks grow while each keeps asking: they interleave in the file
        seen += [first.next(SECURITY_CHANNEL) for _ in range(3)]
        seen += [second.next(SECURITY_CHANNEL) for _ in range(5)]
    first.close()
    second.close()
    assert len(seen) == len(set(seen)) == 400


def test_unused_numbers_are_given_back_so_one_writer_stays_contiguous(tmp_path: Path) -> None:
    path = tmp_path / "events.sqlite3"
    EventStore(path).close()
    numbers = StoreNumbers(path)
    taken = [numbers.next(CI_CHANNEL) for _ in range(3)]  # the block grew past 3
    numbers.close()
    again = StoreNumbers(path)
    assert taken + [again.next(CI_CHANNEL)] == [1, 2, 3, 4]
    again.close()


def test_a_version_1_store_is_numbered_per_channel_on_opening(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    events = events_for_report(tampered_report(), host=HOST)
    db = sqlite3.connect(path)
    db.executescript(
        """CREATE TABLE events (record_id INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id INTEGER NOT NULL, channel TEXT NOT NULL, time_us INTEGER NOT NULL,
        outcome TEXT NOT NULL, path TEXT, activity_id TEXT, body TEXT NOT NULL);
        PRAGMA user_version=1;"""
    )
    db.executemany(
        "INSERT INTO events (event_id, channel, time_us, outcome, body) VALUES (?, ?, 0, '', ?)",
        [(e.event_id, e.channel, e.to_json()) for e in events * 2],
    )
    db.commit()
    db.close()
    with EventStore(path) as store:
        stored = [(e.event_id, e.record_id) for e in store.query()]
        assert stored == [(3033, 1), (3089, 2), (5038, 1), (6281, 2)] + [
            (3033, 3), (3089, 4), (5038, 3), (6281, 4),
        ]  # fmt: skip
        assert store.next_record_id(SECURITY_CHANNEL) == 5
        version = store._db.execute("PRAGMA user_version").fetchone()[0]
        assert version == 2


def test_two_verify_processes_on_one_store_never_share_an_id(tmp_path: Path) -> None:
    """Two real `codeintegrity verify` processes write the same store at the same time; the
    ids on their live outputs are unique per channel and are the ids the store holds."""
    store = tmp_path / "events.sqlite3"
    runs = []
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        for n in range(40):  # tampered files: 3089, 3033, 5038, 6281 each
            shutil.copyfile(FIXTURES / "bad_flip_text.exe", folder / f"{n}.exe")
        out = tmp_path / f"{name}.jsonl"
        command = [sys.executable, "-m", "codeintegrity", "verify", "--no-cache", "--store",
                   str(store), "--events", f"jsonl:{out}", str(folder)]  # fmt: skip
        runs.append((out, subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL)))
    for _, process in runs:
        assert process.wait(timeout=300) == 1  # the files are invalid
    live: list[tuple[str, int, int]] = []
    for out, _ in runs:
        for line in out.read_text("utf-8").splitlines():
            doc = json.loads(line)["winlog"]
            live.append((doc["channel"], doc["record_id"], int(doc["event_id"])))
    keys = [(channel, number) for channel, number, _ in live]
    assert len(keys) == len(set(keys)), "an EventRecordID was handed out twice"
    assert len(live) >= 2 * 40 * 4
    with EventStore(store) as opened:
        stored = {(e.channel, e.record_id): e.event_id for e in opened.query()}
    assert stored == {(channel, number): event_id for channel, number, event_id in live}


def test_evtx_record_numbers_are_the_stores_and_continue_across_runs(tmp_path: Path) -> None:
    store = tmp_path / "events.sqlite3"
    logs = tmp_path / "logs"
    for run in range(2):
        pipeline = open_pipeline([f"evtx:{logs}"], store_path=str(store), computer="HOST")
        pipeline.emit_report(tampered_report(f"/run{run}/a.exe"))
        pipeline.emit_report(denied_report("enforce", f"/run{run}/b.sys"))
        assert pipeline.close().complete
    with EventStore(store) as opened:
        stored = list(opened.query())
    for channel in (SECURITY_CHANNEL, CI_CHANNEL):
        numbers = [e.record_id for e in stored if e.channel == channel]
        assert numbers == list(range(1, len(numbers) + 1))
        read = READERS["libevtx"](logs / channel_file_name(channel))
        assert [r[0]["record_id"] for r in read] == numbers
        assert [r[0]["event_id"] for r in read] == [
            e.event_id for e in stored if e.channel == channel
        ]
