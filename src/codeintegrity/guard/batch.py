"""The answers to one read()'s worth of permission events, written together.

The event thread decides every open it can at once (cached verdicts, opens that are not its
business) and answers them all before doing any slow work of the same read (the path and first
bytes of a cache miss, building events): one ``writev()`` carries every answer, the event fds
are closed after it, and the counters and decision latencies are updated once, under one lock.
"""

from __future__ import annotations

import os
import time
from itertools import repeat
from typing import TYPE_CHECKING

from . import fanotify as fan

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..report import Report
    from .cache import Verdict
    from .opener import Opener
    from .stats import GuardStats


class AnswerBatch:
    """Answers collected while one read's events are looked at, sent by :meth:`flush`."""

    __slots__ = (
        "started",
        "responses",
        "fds",
        "allowed",
        "denied",
        "audited",
        "ignored",
        "kernel_overflows",
        "emits",
    )

    def __init__(self, started: float) -> None:
        self.started = started  # when the events were read: the decision latency starts here
        self.responses: list[bytes] = []
        self.fds: list[int] = []
        self.allowed = self.denied = self.audited = self.ignored = self.kernel_overflows = 0
        self.emits: list[tuple[Report, Opener]] = []

    def count(self, verdict: Verdict, opener: Opener | None) -> None:
        """Count an open answered with a cached verdict (its response is in ``responses``);
        ``opener`` (read before answering, while the process still waits in the kernel) when
        the verdict raises events."""
        if verdict.allow:
            self.allowed += 1
            self.audited += verdict.raises_events
        else:
            self.denied += 1
        if opener is not None:
            self.emits.append((verdict.report, opener))

    def flush(self, group: int, stats: GuardStats, log: Callable[[str], None]) -> None:
        """Write every answer, close every fd, count; a no-op for an empty batch."""
        if self.responses and group >= 0:
            for index, exc in fan.write_responses(group, self.responses):
                # ENOENT: the kernel no longer waits for this fd (the opener was killed).
                log(f"answer for fd {self.fds[index]} not taken: {exc.strerror}")
        for fd in self.fds:
            os.close(fd)
        decided = self.allowed + self.denied
        if decided:
            took = int((time.monotonic() - self.started) * 1_000_000)
            stats.latencies_us.extend(repeat(took, decided))  # deque.extend: no lock needed
        if self.fds or self.kernel_overflows:
            with stats.lock:
                stats.allowed += self.allowed
                stats.denied += self.denied
                stats.audited += self.audited
                stats.ignored += self.ignored
                stats.kernel_overflows += self.kernel_overflows
