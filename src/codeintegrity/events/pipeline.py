"""From reports to sinks: a bounded queue and a writer thread per sink.

Verification never waits on a sink for long: :meth:`EventPipeline.emit_report` spends at most
``max_block`` seconds waiting for queue space, and none at all for a sink whose last write
failed or whose queue stayed full until its writer makes progress again. An event that does
not fit, or whose batch a sink rejects, is counted as discarded for that sink, and the next
time that sink accepts a write it first receives a 4612 event whose ``AuditsDiscarded`` says
how many it lost (the same rule the Windows audit queue follows). What is still unreported at
the end is in :meth:`PipelineSummary.lines`.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import SinkError
from ..report import Report
from .build import Host, audits_discarded_event, events_for_report
from .model import Event
from .paths import default_store_path
from .sinks import Sink, SqliteSink, open_sink
from .store import EventStore

BATCH_SIZE = 512
LINGER = 0.005  # seconds a writer waits for more events before writing a small batch
RETRY_INTERVAL = 0.25  # how often a failing sink is retried when no new events arrive

DeliveredCallback = Callable[[str, Sequence[Event]], None]


@dataclass(frozen=True)
class PipelineSummary:
    """What happened to the events of one run, per sink URI."""

    produced: int
    delivered: dict[str, int] = field(default_factory=dict)
    discarded: dict[str, int] = field(default_factory=dict)
    reported: dict[str, int] = field(default_factory=dict)  # discards announced by a 4612
    pending: dict[str, int] = field(default_factory=dict)  # still being written at close
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return not any(self.discarded.values()) and not any(self.pending.values())

    def lines(self) -> list[str]:
        out = [f"events: {self.produced} produced"]
        for uri in self.delivered:
            line = f"  {uri}: {self.delivered[uri]} delivered"
            lost = self.discarded.get(uri, 0)
            if lost:
                line += f", {lost} discarded ({self.reported.get(uri, 0)} reported by event 4612)"
            if self.pending.get(uri):
                line += f", {self.pending[uri]} still being written at exit (outcome unknown)"
            if uri in self.errors:
                line += f"; last error: {self.errors[uri]}"
            out.append(line)
        return out


class _SinkWorker:
    def __init__(
        self,
        sink: Sink,
        queue_size: int,
        pipeline: EventPipeline,
        on_delivered: DeliveredCallback | None,
    ) -> None:
        self.sink = sink
        self.queue: queue.Queue[Event | None] = queue.Queue(maxsize=max(1, queue_size))
        self._pipeline = pipeline
        self._on_delivered = on_delivered
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.healthy = True
        self.congested = False
        self.delivered = 0
        self.discarded = 0
        self.reported = 0
        self.unreported = 0
        self.last_error: str | None = None
        self.thread = threading.Thread(
            target=self._run, name=f"codeintegrity-sink {sink.uri}", daemon=True
        )
        self.thread.start()

    # --- producer side -------------------------------------------------------------------------
    def offer(self, event: Event, deadline: float) -> None:
        try:
            if self.healthy and not self.congested:
                self.queue.put(event, timeout=max(0.0, deadline - time.monotonic()))
            else:
                self.queue.put_nowait(event)
        except queue.Full:
            # Stop waiting for this sink until its writer makes progress again.
            self.congested = True
            self._lost(1, "queue full")

    def _lost(self, count: int, reason: str) -> None:
        with self._lock:
            self.discarded += count
            self.unreported += count
            self.last_error = reason

    def idle(self) -> bool:
        # unfinished_tasks drops only after a batch was written (or counted as discarded).
        with self.queue.mutex:
            return self.queue.unfinished_tasks == 0

    # --- writer thread -------------------------------------------------------------------------
    def _take(self) -> list[Event | None]:
        timeout = 0.0 if self._stop.is_set() else RETRY_INTERVAL
        try:
            first = self.queue.get(timeout=timeout) if timeout else self.queue.get_nowait()
        except queue.Empty:
            return []
        batch = [first]
        self._drain_into(batch)
        if len(batch) < BATCH_SIZE and not self._stop.is_set():
            # Linger briefly: one write (and flush or commit) per event would cost far more.
            time.sleep(LINGER)
            self._drain_into(batch)
        return batch

    def _drain_into(self, batch: list[Event | None]) -> None:
        while len(batch) < BATCH_SIZE:
            try:
                batch.append(self.queue.get_nowait())
            except queue.Empty:
                return

    def _run(self) -> None:
        while True:
            taken = self._take()
            batch = [e for e in taken if e is not None]  # None only wakes the thread
            if batch or self.unreported:
                self._write(batch)
            for _ in taken:
                self.queue.task_done()
            if self._stop.is_set() and self.queue.empty():
                break

    def _write(self, batch: list[Event]) -> None:
        with self._lock:
            announce = self.unreported
        events = list(batch)
        if announce:
            notice = audits_discarded_event(announce, host=self._pipeline.host)
            events.insert(0, notice.with_record_id(self._pipeline.next_record_id()))
        try:
            written = self.sink.write(events)
        except Exception as exc:  # any sink failure is a counted loss, never a crash
            self.healthy = False
            if batch:
                self._lost(len(batch), str(exc))
            else:
                with self._lock:
                    self.last_error = str(exc)
            return
        self.healthy = True
        self.congested = False
        with self._lock:
            self.delivered += len(batch)
            self.reported += announce
            self.unreported -= announce
        if self._on_delivered is not None:
            self._on_delivered(self.sink.uri, written)

    def stop(self) -> None:
        self._stop.set()
        try:
            self.queue.put_nowait(None)  # wake a writer waiting for events
        except queue.Full:
            pass  # busy writer: it sees the stop flag after this batch


class EventPipeline:
    """Sinks fed through bounded queues. Use :func:`open_pipeline` to build one."""

    def __init__(
        self,
        sinks: Sequence[Sink],
        *,
        host: Host,
        queue_size: int = 10000,
        first_record_id: int = 1,
        max_block: float = 1.0,
        on_delivered: DeliveredCallback | None = None,
    ) -> None:
        self.host = host
        self.max_block = max_block
        self._ids_lock = threading.Lock()
        self._next_id = first_record_id
        self.produced = 0
        self._workers = [_SinkWorker(s, queue_size, self, on_delivered) for s in sinks]
        self._closed: PipelineSummary | None = None

    @property
    def uris(self) -> list[str]:
        return [w.sink.uri for w in self._workers]

    def next_record_id(self) -> int:
        with self._ids_lock:
            value = self._next_id
            self._next_id += 1
            return value

    def emit(self, event: Event, *, deadline: float | None = None) -> None:
        """Queue one event for every sink (assigning its EventRecordID if it has none)."""
        if self._closed is not None:
            raise SinkError("event pipeline is closed")
        if event.record_id is None:
            event = event.with_record_id(self.next_record_id())
        self.produced += 1
        if deadline is None:
            deadline = time.monotonic() + self.max_block
        for worker in self._workers:
            worker.offer(event, deadline)

    def emit_report(self, report: Report) -> int:
        """Queue every event a report raises; returns how many were produced."""
        events = events_for_report(report, host=self.host)
        deadline = time.monotonic() + self.max_block
        for event in events:
            self.emit(event, deadline=deadline)
        return len(events)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued event was written or discarded; False on timeout."""
        deadline = time.monotonic() + timeout
        while not all(w.idle() for w in self._workers):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.002)
        return True

    def close(self, timeout: float = 10.0) -> PipelineSummary:
        """Flush (up to ``timeout`` seconds), stop the writers, close the sinks."""
        if self._closed is not None:
            return self._closed
        deadline = time.monotonic() + timeout
        for worker in self._workers:
            worker.stop()
        for worker in self._workers:
            worker.thread.join(max(0.0, deadline - time.monotonic()))
        summary = PipelineSummary(produced=self.produced)
        for worker in self._workers:
            uri = worker.sink.uri
            if worker.thread.is_alive():
                # Stuck in a write: what is still queued is lost; the batch in hand is unknown.
                left = 0
                while True:
                    try:
                        item = worker.queue.get_nowait()
                    except queue.Empty:
                        break
                    left += item is not None
                if left:
                    worker._lost(left, "not written before the close timeout")
                summary.pending[uri] = self.produced - worker.delivered - worker.discarded
            else:
                try:
                    worker.sink.close()
                except Exception as exc:  # closing must not hide the summary
                    worker.last_error = str(exc)
            summary.delivered[uri] = worker.delivered
            summary.discarded[uri] = worker.discarded
            summary.reported[uri] = worker.reported
            if worker.last_error and worker.discarded:
                summary.errors[uri] = worker.last_error
        self._closed = summary
        return summary

    def __enter__(self) -> EventPipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_pipeline(
    uris: Sequence[str],
    *,
    store: bool = True,
    store_path: str | None = None,
    computer: str | None = None,
    queue_size: int = 10000,
    max_block: float = 1.0,
    on_delivered: DeliveredCallback | None = None,
) -> EventPipeline:
    """Open every sink (raising SinkError before anything runs) and start the writers.

    ``store`` adds the embedded SQLite store (``store_path`` or :func:`default_store_path`).
    EventRecordIDs continue from the store's last one, so live sinks and the store agree
    while one process writes it.
    """
    sinks: list[Sink] = []
    try:
        if store:
            path = Path(store_path) if store_path else default_store_path()
            sinks.append(SqliteSink(f"sqlite:{path}", EventStore(path)))
        for uri in uris:
            sink = open_sink(uri)
            if any(s.uri == sink.uri for s in sinks):
                sink.close()
                continue
            sinks.append(sink)
    except BaseException:
        for sink in sinks:
            sink.close()
        raise
    first = 1
    for sink in sinks:
        if isinstance(sink, SqliteSink):
            first = max(first, sink.store.next_record_id())
    return EventPipeline(
        sinks,
        host=Host.current(computer),
        queue_size=queue_size,
        first_record_id=first,
        max_block=max_block,
        on_delivered=on_delivered,
    )
