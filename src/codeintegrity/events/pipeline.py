"""From reports to sinks: a bounded queue and a writer thread per sink.

Verification never waits on a sink for long: :meth:`EventPipeline.emit_report` spends at most
``max_block`` seconds waiting for queue space, and none at all for a sink whose last write
failed or whose queue stayed full until its writer makes progress again. An event that does
not fit, or whose batch a sink rejects, is counted as discarded for that sink, and the next
time that sink accepts a write it first receives a 4612 event whose ``AuditsDiscarded`` says
how many it lost (the same rule the Windows audit queue follows). What is still unreported at
the end is in :meth:`PipelineSummary.lines`.

Counts are exact: a sink that delivers part of a batch says how many events made it
(:class:`~.sinks.SinkWriteError`), and one that learns later that delivered events never
arrived (a TCP connection that died with unacknowledged data) moves them from delivered to
discarded. For every sink, ``delivered + discarded + pending == produced``.

Throughput (``benchmarks/events.py``): a report's events are numbered while they are built and
travel as one batch, so the producer takes each sink's lock once per report and signals the
writer only when it sleeps; the writer lingers ``LINGER`` for more and writes up to
``BATCH_SIZE`` events with one write and flush (one COMMIT for the store).
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import SinkError
from ..report import Report
from .build import Host, audits_discarded_event, events_for_report
from .model import Event
from .numbering import LocalNumbers, RecordNumbers
from .paths import default_store_path
from .schema import SECURITY_CHANNEL
from .sinks import Sink, SqliteSink, open_sink
from .store import EventStore

BATCH_SIZE = 2048  # events per write: one flush, one COMMIT (and fsync) per batch
LINGER = 0.005  # seconds a writer waits for more events before writing a small batch
RETRY_INTERVAL = 0.25  # how often a failing sink is retried when no new events arrive

DeliveredCallback = Callable[[str, Sequence[Event]], None]

# Worker processes are forked (scan.pool, a Dask LocalCluster). A fork in the middle of a
# sink's write gives the child the locks that write held, held for good: an `image --jobs`
# worker was seen stuck on SQLite's allocator mutex, taken by the event store's writer at the
# moment of the fork, as it opened its own catalog index. So a fork waits for the writes in
# progress, for at most FORK_WAIT seconds per sink (a sink stuck on a dead peer must not
# stop a scan from starting its workers).
FORK_WAIT = 10.0
_WRITERS: weakref.WeakSet[_SinkWorker] = weakref.WeakSet()
_HELD_FOR_FORK: list[threading.Lock] = []


def _before_fork() -> None:
    locks = [writer.writing for writer in list(_WRITERS)]
    _HELD_FOR_FORK.extend(lock for lock in locks if lock.acquire(timeout=FORK_WAIT))


def _after_fork() -> None:
    while _HELD_FOR_FORK:
        _HELD_FOR_FORK.pop().release()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork, after_in_parent=_after_fork, after_in_child=_after_fork
    )


@dataclass(frozen=True)
class PipelineSummary:
    """What happened to the events of one run, per sink URI."""

    produced: int
    delivered: dict[str, int] = field(default_factory=dict)
    discarded: dict[str, int] = field(default_factory=dict)
    reported: dict[str, int] = field(default_factory=dict)  # discards announced by a 4612
    pending: dict[str, int] = field(default_factory=dict)  # still being written at close
    errors: dict[str, str] = field(default_factory=dict)
    # Why the default store is not among the sinks (it could not be opened), else None.
    store_unavailable: str | None = None

    @property
    def complete(self) -> bool:
        """Every event reached every sink (a store that could not be opened is not a sink)."""
        return not any(self.discarded.values()) and not any(self.pending.values())

    @property
    def lost(self) -> dict[str, int]:
        """Per sink, events known lost plus those whose outcome is unknown at close."""
        return {
            uri: self.discarded.get(uri, 0) + self.pending.get(uri, 0) for uri in self.delivered
        }

    @property
    def lost_total(self) -> int:
        """``lost`` summed over the sinks (an event lost by two sinks counts twice); 0 exactly
        when ``complete``."""
        return sum(self.lost.values())

    @property
    def unannounced(self) -> dict[str, int]:
        """Per sink, losses no 4612 event told that sink about."""
        return {
            uri: self.discarded.get(uri, 0) - self.reported.get(uri, 0) for uri in self.delivered
        }

    def lines(self) -> list[str]:
        out = [f"events: {self.produced} produced"]
        if self.store_unavailable:
            out.append(f"  events were not recorded in the default store: {self.store_unavailable}")
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
    """One sink's bounded queue and writer thread.

    The queue holds batches (the events of one report), bounded by the number of events. The
    producer takes the lock once per batch and wakes the writer only when it sleeps; per-event
    locking and condition variables cost more than building the events did.
    """

    def __init__(
        self,
        sink: Sink,
        queue_size: int,
        pipeline: EventPipeline,
        on_delivered: DeliveredCallback | None,
    ) -> None:
        self.sink = sink
        self.capacity = max(1, queue_size)
        self._batches: deque[Sequence[Event]] = deque()
        self._queued = 0  # events in _batches
        self._in_hand = 0  # events taken by the writer, not yet written or counted as lost
        self._lock = threading.Lock()
        self._has_events = threading.Condition(self._lock)
        self._has_room = threading.Condition(self._lock)
        self._writer_waiting = False
        self._producers_waiting = 0
        self._stopping = False
        self._pipeline = pipeline
        self._on_delivered = on_delivered
        self.healthy = True
        self.congested = False
        self.delivered = 0
        self.discarded = 0
        self.reported = 0
        self.unreported = 0
        self.last_error: str | None = None
        self.writing = threading.Lock()  # held while the writer writes (see FORK_WAIT)
        _WRITERS.add(self)
        self.thread = threading.Thread(
            target=self._run, name=f"codeintegrity-sink {sink.uri}", daemon=True
        )
        self.thread.start()

    # --- producer side -------------------------------------------------------------------------
    def offer(self, batch: Sequence[Event], deadline: float) -> None:
        """Queue ``batch``, waiting for room until ``deadline`` only while the sink keeps up;
        what does not fit is counted as discarded."""
        count = len(batch)
        queued = 0
        with self._lock:
            while True:
                room = self.capacity - self._queued
                if room > 0:
                    part = batch if queued == 0 and room >= count else batch[queued : queued + room]
                    self._batches.append(part)
                    self._queued += len(part)
                    queued += len(part)
                    if self._writer_waiting:
                        self._has_events.notify()
                if queued == count:
                    return
                if not self.healthy or self.congested or self._stopping:
                    break
                self._producers_waiting += 1
                try:
                    left = deadline - time.monotonic()
                    if left <= 0 or not self._has_room.wait(left):
                        break
                finally:
                    self._producers_waiting -= 1
            # Stop waiting for this sink until its writer makes progress again.
            self.congested = True
            self._lost_locked(count - queued, "queue full")

    def _lost_locked(self, count: int, reason: str) -> None:
        self.discarded += count
        self.unreported += count
        self.last_error = reason

    def idle(self) -> bool:
        with self._lock:
            return self._queued == 0 and self._in_hand == 0

    def drop_queued(self, reason: str) -> None:
        """Count everything still queued as lost (close gave up on a stuck writer)."""
        with self._lock:
            left = self._queued
            self._batches.clear()
            self._queued = 0
            if left:
                self._lost_locked(left, reason)

    # --- writer thread -------------------------------------------------------------------------
    def _take(self) -> list[Event]:
        """Up to about BATCH_SIZE events; [] when there were none for RETRY_INTERVAL."""
        with self._lock:
            if not self._batches and not self._stopping:
                self._writer_waiting = True
                self._has_events.wait(RETRY_INTERVAL)
                self._writer_waiting = False
            taken = self._drain_locked([])
        if taken and len(taken) < BATCH_SIZE and not self._stopping:
            # Linger briefly: one write (and flush or commit) per report would cost far more.
            time.sleep(LINGER)
            with self._lock:
                self._drain_locked(taken)
        return taken

    def _drain_locked(self, taken: list[Event]) -> list[Event]:
        batches = self._batches
        before = len(taken)
        while batches and len(taken) < BATCH_SIZE:
            taken.extend(batches.popleft())
        moved = len(taken) - before
        if moved:
            self._queued -= moved
            self._in_hand += moved
            if self._producers_waiting:
                self._has_room.notify_all()
        return taken

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch or self.unreported:
                with self.writing:
                    self._write(batch)
            with self._lock:
                self._in_hand = 0
                if self._stopping and not self._batches:
                    break

    def _write(self, batch: list[Event]) -> None:
        with self._lock:
            announce = self.unreported
        events = batch
        if announce:
            notice = audits_discarded_event(announce, host=self._pipeline.host)
            events = [notice.with_record_id(self._pipeline.next_record_id()), *batch]
        try:
            written = self.sink.write(events)
        except Exception as exc:  # any sink failure is a counted loss, never a crash
            # A partial write says how many leading events (the 4612 first, if any) made it.
            made_it = max(0, min(int(getattr(exc, "delivered", 0) or 0), len(events)))
            notice_sent = bool(announce) and made_it > 0
            kept = made_it - 1 if notice_sent else made_it
            with self._lock:
                self.healthy = False
                if notice_sent:
                    self.reported += announce
                    self.unreported -= announce
                self.delivered += kept
                if len(batch) > kept:
                    self._lost_locked(len(batch) - kept, str(exc))
                else:
                    self.last_error = str(exc)
            self.collect_late_losses()
            if kept and self._on_delivered is not None:
                self._notify(events[int(notice_sent) : int(notice_sent) + kept])
            return
        with self._lock:
            self.healthy = True
            self.congested = False
            self.delivered += len(batch)
            self.reported += announce
            self.unreported -= announce
        self.collect_late_losses()
        self._notify(written)

    def collect_late_losses(self) -> None:
        """Move events the sink reported delivered, and now knows were not, to discarded."""
        take = getattr(self.sink, "take_late_losses", None)
        if take is None:
            return
        try:
            late, reason = take()
        except Exception:  # a sink's bookkeeping must not stop the writer
            return
        if late:
            with self._lock:
                late = min(late, self.delivered)
                self.delivered -= late
                self._lost_locked(late, reason)
        notices = getattr(self.sink, "take_late_notice_losses", None)
        again = notices() if notices is not None else 0
        if again:  # a 4612 that never arrived: its discards are to be announced again
            with self._lock:
                again = min(again, self.reported)
                self.reported -= again
                self.unreported += again

    def _notify(self, written: Sequence[Event]) -> None:
        if self._on_delivered is not None:
            try:
                self._on_delivered(self.sink.uri, written)
            except Exception as exc:  # a failing callback must not stop the writer
                with self._lock:
                    self.last_error = f"on_delivered callback failed: {exc}"

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._has_events.notify()  # wake a writer waiting for events
            self._has_room.notify_all()


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
        record_numbers: RecordNumbers | None = None,
    ) -> None:
        self.host = host
        self.max_block = max_block
        # EventRecordIDs per channel; with a store, reserved in it (.numbering).
        self._record_ids = record_numbers or LocalNumbers(first_record_id)
        self.produced = 0
        self._workers = [_SinkWorker(s, queue_size, self, on_delivered) for s in sinks]
        self._closed: PipelineSummary | None = None
        # Set by open_pipeline when the default store could not be opened (see there).
        self.store_unavailable: str | None = None

    @property
    def uris(self) -> list[str]:
        return [w.sink.uri for w in self._workers]

    def next_record_id(self, channel: str = SECURITY_CHANNEL) -> int:
        return self._record_ids.next(channel)

    def emit(self, event: Event, *, deadline: float | None = None) -> None:
        """Queue one event for every sink (assigning its EventRecordID if it has none)."""
        if self._closed is not None:
            raise SinkError("event pipeline is closed")
        if event.record_id is None:
            event = event.with_record_id(self.next_record_id(event.channel))
        self._queue((event,), deadline)

    def emit_batch(self, events: Iterable[Event], *, deadline: float | None = None) -> int:
        """Queue events for every sink as one batch (numbering those without an
        EventRecordID); returns how many. Waits at most until ``deadline`` (default: now plus
        ``max_block``) for queue space; what does not fit is counted as discarded."""
        if self._closed is not None:
            raise SinkError("event pipeline is closed")
        # A tuple of its own: the caller may reuse its list while the writers read this one.
        batch = tuple(self._record_ids.assign(list(events)))
        self._queue(batch, deadline)
        return len(batch)

    def emit_report(self, report: Report) -> int:
        """Queue every event a report raises; returns how many were produced."""
        if self._closed is not None:
            raise SinkError("event pipeline is closed")
        # Numbered as they are built; one queue operation per sink for the whole report.
        events = events_for_report(report, host=self.host, record_ids=self._record_ids)
        self._queue(events, None)
        return len(events)

    def _queue(self, events: Sequence[Event], deadline: float | None) -> None:
        if not events:
            return
        self.produced += len(events)
        if deadline is None:
            deadline = time.monotonic() + self.max_block
        for worker in self._workers:
            worker.offer(events, deadline)

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
        summary = PipelineSummary(produced=self.produced, store_unavailable=self.store_unavailable)
        for worker in self._workers:
            uri = worker.sink.uri
            if worker.thread.is_alive():
                # Stuck in a write: what is still queued is lost; the batch in hand is unknown.
                worker.drop_queued("not written before the close timeout")
                summary.pending[uri] = self.produced - worker.delivered - worker.discarded
            else:
                try:
                    worker.sink.close()
                except Exception as exc:  # closing must not hide the summary
                    worker.last_error = str(exc)
                # A connection closed with unacknowledged data: those never arrived.
                worker.collect_late_losses()
            summary.delivered[uri] = worker.delivered
            summary.discarded[uri] = worker.discarded
            summary.reported[uri] = worker.reported
            if worker.last_error and worker.discarded:
                summary.errors[uri] = worker.last_error
        self._record_ids.close()  # gives back numbers reserved and not used
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
    EventRecordIDs are reserved per channel in the store, so live sinks and the store agree
    even when several processes write it.

    A store named by ``store_path`` that cannot be opened raises (the user asked for it). The
    *default* store that cannot be opened (a read-only home) does not stop anything: the
    pipeline runs without it, and ``pipeline.store_unavailable`` (also in the summary, and in
    its ``lines()``) says why, naming ``--no-store`` and ``CODEINTEGRITY_HOME``, for the caller
    to print as a warning.
    """
    sinks: list[Sink] = []
    store_unavailable: str | None = None
    numbers = None
    try:
        if store:
            path = Path(store_path) if store_path else default_store_path()
            event_store: EventStore | None = None
            try:
                event_store = EventStore(path)
            except SinkError as exc:
                if store_path:
                    raise
                store_unavailable = (
                    f"{exc}; use --no-store, or set CODEINTEGRITY_HOME to a writable folder"
                )
            if event_store is not None:
                sinks.append(SqliteSink(f"sqlite:{path}", event_store))
                numbers = event_store.numbering()
        for uri in uris:
            sink = open_sink(uri)
            if any(s.uri == sink.uri for s in sinks):
                sink.close()
                continue
            sinks.append(sink)
    except BaseException:
        for sink in sinks:
            sink.close()
        if numbers is not None:
            numbers.close()
        raise
    pipeline = EventPipeline(
        sinks,
        host=Host.current(computer),
        queue_size=queue_size,
        max_block=max_block,
        on_delivered=on_delivered,
        record_numbers=numbers,
    )
    pipeline.store_unavailable = store_unavailable
    return pipeline
