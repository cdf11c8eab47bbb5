from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from codeintegrity.errors import SinkError
from codeintegrity.events.model import Event
from codeintegrity.events.pipeline import EventPipeline, open_pipeline
from codeintegrity.events.sinks import SinkWriteError
from codeintegrity.events.store import EventStore

from .reports import HOST, shared_writable_report, tampered_report, valid_report


class GatedSink:
    """Accepts writes only while its gate is open; can also fail on purpose."""

    def __init__(self, uri: str = "fake:gated") -> None:
        self.uri = uri
        self.gate = threading.Event()
        self.gate.set()
        self.failing = False
        self.received: list[Event] = []
        self.closed = False

    def write(self, events: Sequence[Event]) -> Sequence[Event]:
        self.gate.wait()
        if self.failing:
            raise SinkWriteError(f"{self.uri}: down")
        self.received.extend(events)
        return events

    def close(self) -> None:
        self.closed = True

    def accounted(self) -> int:
        """Ordinary events received plus the losses announced by 4612 events."""
        ordinary = sum(1 for e in self.received if e.event_id != 4612)
        announced = sum(
            int(e.value("AuditsDiscarded")) for e in self.received if e.event_id == 4612
        )
        return ordinary + announced


def test_reports_reach_jsonl_and_the_store_with_matching_record_ids(tmp_path: Path):
    jsonl = tmp_path / "events.jsonl"
    store_path = tmp_path / "store.sqlite3"
    with EventStore(store_path) as store:  # an earlier run left two events
        store.append(
            [e for e in _events(valid_report()) if False] or _events(tampered_report())[:2]
        )
    pipeline = open_pipeline([f"jsonl:{jsonl}"], store_path=str(store_path), computer="HOSTX")
    produced = pipeline.emit_report(tampered_report())
    produced += pipeline.emit_report(valid_report())
    produced += pipeline.emit_report(shared_writable_report())
    summary = pipeline.close()
    assert produced == 4 + 0 + 3
    assert summary.produced == produced
    assert summary.delivered == {f"sqlite:{store_path}": 7, f"jsonl:{jsonl}": 7}
    assert summary.complete
    docs = [json.loads(line) for line in jsonl.read_text("utf-8").splitlines()]
    with EventStore(store_path) as store:
        stored = list(store.query())[2:]
    assert [d["winlog"]["record_id"] for d in docs] == [e.record_id for e in stored]
    # Per channel, after the earlier run's two CodeIntegrity events (3033, 3089):
    # tampered: 3033 3089 | 5038 6281; shared writable: 3063 3089 | 6410.
    assert [(e.event_id, e.record_id) for e in stored] == [
        (3033, 3), (3089, 4), (5038, 1), (6281, 2), (3063, 5), (3089, 6), (6410, 3),
    ]  # fmt: skip
    assert [d["host"]["name"] for d in docs] == ["HOSTX"] * 7
    assert summary.lines()[0] == "events: 7 produced"


def _events(report) -> list[Event]:
    from codeintegrity.events.build import events_for_report

    return events_for_report(report, host=HOST)


def test_store_false_and_duplicate_uris(tmp_path: Path):
    uri = f"jsonl:{tmp_path / 'e.jsonl'}"
    pipeline = open_pipeline([uri, uri], store=False)
    assert pipeline.uris == [uri]
    pipeline.close()


def test_bad_uri_fails_before_anything_runs_and_closes_opened_sinks(tmp_path: Path):
    with pytest.raises(SinkError, match="unknown sink"):
        open_pipeline([f"jsonl:{tmp_path / 'a.jsonl'}", "nope:x"], store_path=str(tmp_path / "s"))


def test_slow_sink_never_blocks_verification_and_losses_are_announced_by_4612():
    sink = GatedSink()
    sink.gate.clear()  # the sink hangs
    pipeline = EventPipeline([sink], host=HOST, queue_size=8, max_block=0.2)
    started = time.monotonic()
    produced = sum(pipeline.emit_report(tampered_report(f"/d/{n}.exe")) for n in range(10))
    elapsed = time.monotonic() - started
    assert produced == 40
    assert elapsed < 1.0  # one max_block for the first report that blocked, not one per event
    sink.gate.set()  # the sink accepts events again
    assert pipeline.flush(5)
    produced += pipeline.emit_report(tampered_report("/d/after.exe"))
    summary = pipeline.close()
    lost = summary.discarded[sink.uri]
    assert lost > 0
    assert summary.reported[sink.uri] == lost
    notices = [e for e in sink.received if e.event_id == 4612]
    assert sum(int(n.value("AuditsDiscarded")) for n in notices) == lost
    assert summary.delivered[sink.uri] + lost == produced
    assert sink.accounted() == produced
    assert f"{lost} discarded ({lost} reported by event 4612)" in summary.lines()[1]


def test_failing_sink_loses_counted_batches_and_reports_when_back():
    sink = GatedSink()
    sink.failing = True
    pipeline = EventPipeline([sink], host=HOST, queue_size=100)
    produced = pipeline.emit_report(tampered_report("/d/1.exe"))
    assert pipeline.flush(5)
    sink.failing = False
    produced += pipeline.emit_report(tampered_report("/d/2.exe"))
    summary = pipeline.close()
    assert summary.discarded[sink.uri] == 4
    assert summary.delivered[sink.uri] == 4
    assert sink.received[0].event_id == 4612
    assert sink.received[0].value("AuditsDiscarded") == "4"
    assert sink.accounted() == produced


def test_sink_that_recovers_while_idle_gets_the_4612_without_new_events():
    sink = GatedSink()
    sink.failing = True
    pipeline = EventPipeline([sink], host=HOST, queue_size=100)
    pipeline.emit_report(tampered_report())
    assert pipeline.flush(5)
    sink.failing = False
    deadline = time.monotonic() + 5
    while not sink.received and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [e.event_id for e in sink.received] == [4612]
    assert pipeline.close().reported[sink.uri] == 4


def test_close_gives_up_on_a_stuck_sink_and_says_so():
    stuck = GatedSink("fake:stuck")
    stuck.gate.clear()
    healthy = GatedSink("fake:ok")
    pipeline = EventPipeline([stuck, healthy], host=HOST, queue_size=100, max_block=0.05)
    for n in range(3):
        pipeline.emit_report(tampered_report(f"/d/{n}.exe"))
    started = time.monotonic()
    summary = pipeline.close(timeout=0.5)
    assert time.monotonic() - started < 2.0
    assert summary.delivered["fake:ok"] == 12
    assert summary.delivered["fake:stuck"] == 0
    # 12 produced: the batch in the writer's hand is "pending", the rest discarded.
    assert summary.pending["fake:stuck"] + summary.discarded["fake:stuck"] == 12
    assert summary.pending["fake:stuck"] >= 1
    assert not summary.complete
    assert "outcome unknown" in " ".join(summary.lines())
    assert healthy.closed
    stuck.gate.set()
    with pytest.raises(SinkError, match="closed"):
        pipeline.emit(healthy.received[0])


def test_context_manager_and_explicit_events(tmp_path: Path):
    with open_pipeline([], store_path=str(tmp_path / "s.sqlite3")) as pipeline:
        from codeintegrity.events.build import audits_discarded_event

        pipeline.emit(audits_discarded_event(3, host=HOST))
    with EventStore(tmp_path / "s.sqlite3") as store:
        (event,) = store.query()
    assert event.event_id == 4612 and event.value("AuditsDiscarded") == "3"


class BlockingSink(GatedSink):
    """A GatedSink that says when a write has started (and is held at the gate)."""

    def __init__(self, uri: str = "fake:blocking") -> None:
        super().__init__(uri)
        self.entered = threading.Event()
        self.writes = 0

    def write(self, events: Sequence[Event]) -> Sequence[Event]:
        self.writes += 1
        self.entered.set()
        return super().write(events)


def test_a_batch_larger_than_the_room_keeps_what_fits_and_counts_the_rest():
    sink = BlockingSink()
    sink.gate.clear()
    pipeline = EventPipeline([sink], host=HOST, queue_size=5, max_block=0.1)
    pipeline.emit_report(tampered_report("/d/first.exe"))  # the writer takes it and hangs
    assert sink.entered.wait(5)
    started = time.monotonic()
    events = [e for n in range(3) for e in _events(tampered_report(f"/d/{n}.exe"))]
    assert pipeline.emit_batch(events) == 12
    waited = time.monotonic() - started
    assert 0.09 <= waited < 1.0  # one max_block, then the rest is dropped
    # The sink is now known to be congested: the next batch does not wait at all.
    started = time.monotonic()
    pipeline.emit_report(tampered_report("/d/more.exe"))
    assert time.monotonic() - started < 0.05
    sink.gate.set()
    assert pipeline.flush(5)
    pipeline.emit_report(tampered_report("/d/after.exe"))
    summary = pipeline.close()
    assert summary.produced == 4 + 12 + 4 + 4
    assert summary.discarded[sink.uri] == 12 + 4 - 5  # 5 fitted in the queue
    assert summary.delivered[sink.uri] == 4 + 5 + 4
    assert sink.accounted() == summary.produced
    kept = [e for e in sink.received if e.event_id != 4612][4:9]
    # The first ones that fit, in order, numbered after the first report.
    assert [(e.event_id, e.path) for e in kept] == [(e.event_id, e.path) for e in events[:5]]
    # Per channel (3033, 3089 CodeIntegrity; 5038, 6281 Security), after the first report.
    assert [e.record_id for e in kept] == [3, 4, 3, 4, 5]


def test_emit_batch_numbers_events_and_copies_the_callers_list():
    sink = GatedSink()
    pipeline = EventPipeline([sink], host=HOST, first_record_id=100)
    batch = _events(tampered_report())
    numbered = batch[0].with_record_id(7)
    batch[0] = numbered
    assert pipeline.emit_batch(batch) == 4
    batch.clear()  # the caller reuses its list at once
    pipeline.emit_report(tampered_report("/d/2.exe"))
    pipeline.emit(_events(tampered_report("/d/3.exe"))[0])
    summary = pipeline.close()
    assert summary.delivered[sink.uri] == 9
    # Each channel counts from 100: 3033/3089 are CodeIntegrity, 5038/6281 Security.
    assert [(e.event_id, e.record_id) for e in sink.received] == [
        (3033, 7), (3089, 100), (5038, 100), (6281, 101),
        (3033, 101), (3089, 102), (5038, 102), (6281, 103), (3033, 103),
    ]  # fmt: skip
    assert sink.received[0] is numbered


def test_writer_batches_many_reports_into_few_writes(tmp_path: Path):
    sink = BlockingSink()
    pipeline = EventPipeline([sink], host=HOST, queue_size=10_000)
    for n in range(200):
        pipeline.emit_report(tampered_report(f"/d/{n}.exe"))
    summary = pipeline.close()
    assert summary.delivered[sink.uri] == 800 and summary.complete
    assert sink.writes <= 50  # a write per linger period, not one per report


def test_a_failing_delivery_callback_does_not_stop_the_writer():
    calls: list[int] = []

    def callback(uri: str, events: Sequence[Event]) -> None:
        calls.append(len(events))
        raise RuntimeError("observer broke")

    sink = GatedSink()
    pipeline = EventPipeline([sink], host=HOST, on_delivered=callback)
    pipeline.emit_report(tampered_report("/d/1.exe"))
    assert pipeline.flush(5)
    pipeline.emit_report(tampered_report("/d/2.exe"))
    assert pipeline.flush(5)
    summary = pipeline.close()
    assert summary.delivered[sink.uri] == 8 and summary.complete
    assert sum(calls) == 8 and len(calls) == 2


def test_emit_after_close_is_refused_for_every_entry_point():
    pipeline = EventPipeline([GatedSink()], host=HOST)
    pipeline.close()
    for call in (
        lambda: pipeline.emit_report(tampered_report()),
        lambda: pipeline.emit_batch(_events(tampered_report())),
    ):
        with pytest.raises(SinkError, match="closed"):
            call()
