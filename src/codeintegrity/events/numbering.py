"""EventRecordIDs: one sequence per channel, handed out where they are persisted.

Windows numbers the records of each log (each .evtx file) on its own: Security and
Microsoft-Windows-CodeIntegrity/Operational each count 1, 2, 3, ... A pipeline therefore asks for
numbers per channel. With a store, the numbers come from the store's ``sequences`` table
(:class:`StoreNumbers`): an allocation is one atomic UPDATE in the store file, so two processes
writing the same store never hand out the same number on any of their outputs, and numbers go
on across runs. Without a store, :class:`LocalNumbers` counts in memory from 1.

Allocation is in blocks that grow while a process keeps emitting (one SQLite statement per
block, not per event); on close, the unused end of each block is given back when no other
process allocated after it, so a single writer's numbers stay contiguous. A process killed
while holding a block leaves a gap, never a duplicate.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

from ..errors import SinkError
from .model import Event

MAX_BLOCK = 1024


class RecordNumbers(Protocol):
    def assign(self, events: Sequence[Event]) -> list[Event]:
        """The events, those without an EventRecordID numbered in their channel."""
        ...

    def next(self, channel: str) -> int:
        """One number in ``channel``."""
        ...

    def close(self) -> None: ...


class _Blocks:
    """Per-channel blocks of reserved numbers; ``_reserve`` fetches a new block."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._blocks: dict[str, list[int]] = {}  # channel -> [next, end) (end exclusive)
        self._sizes: dict[str, int] = {}

    def _reserve(self, channel: str, size: int) -> int:
        """Reserve ``size`` numbers in ``channel``; returns the first."""
        raise NotImplementedError

    def _take(self, channel: str, count: int) -> Iterator[int]:
        block = self._blocks.get(channel)
        taken: list[range] = []
        while count:
            if block is None or block[0] >= block[1]:
                # Grow while a process keeps asking: few statements, small leftovers.
                size = min(max(count, 2 * self._sizes.get(channel, 0)), MAX_BLOCK)
                size = max(size, count)
                self._sizes[channel] = size
                first = self._reserve(channel, size)
                block = self._blocks[channel] = [first, first + size]
            step = min(count, block[1] - block[0])
            taken.append(range(block[0], block[0] + step))
            block[0] += step
            count -= step
        return (number for part in taken for number in part)

    def assign(self, events: Sequence[Event]) -> list[Event]:
        counts: dict[str, int] = {}
        for event in events:
            if event.record_id is None:
                channel = event.channel
                counts[channel] = counts.get(channel, 0) + 1
        if not counts:
            return list(events)
        with self._lock:
            numbers = {channel: self._take(channel, n) for channel, n in counts.items()}
        return [
            e if e.record_id is not None else e.with_record_id(next(numbers[e.channel]))
            for e in events
        ]

    def next(self, channel: str) -> int:
        with self._lock:
            return next(self._take(channel, 1))


class LocalNumbers(_Blocks):
    """Numbers counted in this process (no store): each channel from ``first``."""

    def __init__(self, first: int = 1) -> None:
        super().__init__()
        self._first = first
        self._last: dict[str, int] = {}

    def _reserve(self, channel: str, size: int) -> int:
        start = self._last.get(channel, self._first - 1) + 1
        self._last[channel] = start + size - 1
        return start

    def close(self) -> None:
        pass


SEQUENCES_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS sequences (channel TEXT PRIMARY KEY, last INTEGER NOT NULL)"
)


class StoreNumbers(_Blocks):
    """Numbers reserved in a store file's ``sequences`` table (its own connection, so the
    producer thread never shares a transaction with the store's writer thread)."""

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)
        try:
            self._db = sqlite3.connect(
                str(self.path), isolation_level=None, check_same_thread=False, timeout=10.0
            )
            self._db.execute("PRAGMA busy_timeout=10000")
            # Durable against a process crash without an fsync per block; after a power loss
            # the store re-derives each sequence from its rows (EventStore opening).
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(SEQUENCES_SCHEMA)
        except sqlite3.Error as exc:
            raise SinkError(f"cannot number events in {self.path}: {exc}") from None

    def _reserve(self, channel: str, size: int) -> int:
        try:
            # One statement: atomic across processes (SQLite's write lock).
            row = self._db.execute(
                "INSERT INTO sequences (channel, last) VALUES (?, ?) ON CONFLICT(channel)"
                " DO UPDATE SET last = last + excluded.last RETURNING last",
                (channel, size),
            ).fetchone()
        except sqlite3.Error as exc:
            raise SinkError(f"cannot number events in {self.path}: {exc}") from None
        return int(row[0]) - size + 1

    def close(self) -> None:
        """Give back the unused end of each block when no one allocated after it."""
        with self._lock:
            try:
                for channel, (start, end) in self._blocks.items():
                    if start < end:
                        self._db.execute(
                            "UPDATE sequences SET last = ? WHERE channel = ? AND last = ?",
                            (start - 1, channel, end - 1),
                        )
            except sqlite3.Error:
                pass  # a gap is harmless; a duplicate is what must never happen
            finally:
                self._blocks.clear()
                self._db.close()
