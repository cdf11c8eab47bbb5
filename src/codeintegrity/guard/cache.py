"""The verdict cache: one judgement per version of a file, bounded, with counters.

A version is ``(device, inode, size, mtime_ns, ctime_ns)``: any write changes mtime and ctime,
and resetting mtime (``touch -d``) still moves ctime. The trust/policy fingerprint is part of
the key too, so a reload never answers with a verdict reached under the old rules. Writes seen
by fanotify (FAN_MODIFY, FAN_CLOSE_WRITE) drop every entry of that inode at once, which also
covers a write landing within the timestamp granularity of the previous one.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..report import Report

FileVersion = tuple[int, int, int, int, int]


def file_version(st: os.stat_result) -> FileVersion:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What was decided for one file version: allow or deny, and the report behind it."""

    allow: bool
    report: Report
    raises_events: bool = False  # report.event_ids is not empty (computed once, not per open)

    @classmethod
    def of(cls, allow: bool, report: Report) -> Verdict:
        return cls(allow=allow, report=report, raises_events=bool(report.event_ids))


@dataclass(slots=True)
class CacheCounters:
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    invalidations: int = 0


class VerdictCache:
    """A thread-safe LRU of :class:`Verdict` keyed by file version and rules fingerprint."""

    def __init__(self, capacity: int = 4096) -> None:
        if capacity < 1:
            raise ValueError("cache capacity must be at least 1")
        self.capacity = capacity
        self.counters = CacheCounters()
        self._entries: OrderedDict[tuple[FileVersion, str], Verdict] = OrderedDict()
        self._by_inode: dict[tuple[int, int], set[tuple[FileVersion, str]]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, version: FileVersion, fingerprint: str) -> Verdict | None:
        """The verdict, counting a hit or a miss. From the event thread only, as
        :meth:`lookup` (whose ``hits`` count has that one writer)."""
        verdict = self.lookup(version, fingerprint)
        if verdict is None:
            self.miss()
        return verdict

    def lookup(self, version: FileVersion, fingerprint: str) -> Verdict | None:
        """The verdict, counting only a hit (the caller may not be judging this file).

        Without the lock: this is the guard's per-open path, run by its one event thread.
        ``get`` and ``move_to_end`` are each atomic on the C OrderedDict, an entry evicted by
        a worker in between is only a miss for the LRU order, and ``hits`` has this one
        writer."""
        key = (version, fingerprint)
        verdict = self._entries.get(key)
        if verdict is None:
            return None
        try:
            self._entries.move_to_end(key)
        except KeyError:
            pass  # evicted by a worker's put or cleared by a reload: still the verdict read
        self.counters.hits += 1
        return verdict

    def miss(self) -> None:
        with self._lock:
            self.counters.misses += 1

    def put(self, version: FileVersion, fingerprint: str, verdict: Verdict) -> None:
        key = (version, fingerprint)
        with self._lock:
            self._entries[key] = verdict
            self._entries.move_to_end(key)
            self._by_inode.setdefault((version[0], version[1]), set()).add(key)
            while len(self._entries) > self.capacity:
                old, _ = self._entries.popitem(last=False)
                self._forget_locked(old)
                self.counters.evictions += 1

    def invalidate(self, dev: int, ino: int) -> int:
        """Drop every cached version of one inode (it was written); returns how many."""
        with self._lock:
            keys = self._by_inode.pop((dev, ino), set())
            for key in keys:
                self._entries.pop(key, None)
            self.counters.invalidations += len(keys)
            return len(keys)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._by_inode.clear()

    def _forget_locked(self, key: tuple[FileVersion, str]) -> None:
        inode = (key[0][0], key[0][1])
        keys = self._by_inode.get(inode)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_inode[inode]


def unchanged(fd: int, version: FileVersion) -> bool:
    """True when the file still is the version that was judged (not written meanwhile)."""
    try:
        return file_version(os.fstat(fd)) == version
    except OSError:
        return False
