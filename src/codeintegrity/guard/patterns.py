"""4618 "A monitored security event pattern has occurred", raised by the guard at run time.

Two patterns: ``failures`` integrity failures (opens whose file raised 5038/6281/6410 or a
policy denial) within ``window`` seconds, and any failure on a path under a ``--high-value``
tree. The pattern's description rides in the event's context (``rule.description``); the
Security record itself carries the monitored event ID, the opener's user, the count and the
duration, as the manifest lays them out.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..events.pipeline import EventPipeline
    from ..report import Report
    from .opener import Opener
    from .stats import GuardStats


class PatternMonitor:
    def __init__(
        self,
        pipeline: EventPipeline | None,
        *,
        failures: int = 5,
        window: float = 60.0,
        high_value: tuple[str, ...] = (),
        clock: object = time.monotonic,
    ) -> None:
        self.pipeline = pipeline
        self.failures = failures
        self.window = window
        self.high_value = tuple(os.path.realpath(p).rstrip("/") + "/" for p in high_value)
        self.stats: GuardStats | None = None
        self._clock = clock
        self._recent: deque[float] = deque()
        self._lock = threading.Lock()

    def failure(self, report: Report, opener: Opener) -> list[str]:
        """Record one failure; returns the descriptions of the patterns it completed."""
        now: float = self._clock()  # type: ignore[operator]
        raised: list[str] = []
        with self._lock:
            self._recent.append(now)
            while self._recent and self._recent[0] <= now - self.window:
                self._recent.popleft()
            count = len(self._recent)
            if count >= self.failures:
                self._recent.clear()  # one alert per burst; the next needs a full new burst
                raised.append(f"{count} code integrity failures within {self.window:g} seconds")
        if any(report.path.startswith(root) for root in self.high_value):
            raised.append(f"code integrity failure on the high-value path {report.path}")
        for description in raised:
            self._raise(report, opener, description, count if "within" in description else 1)
        return raised

    def _raise(self, report: Report, opener: Opener, description: str, count: int) -> None:
        from ..events.build import Host
        from ..events.model import make_event

        if self.stats is not None:
            with self.stats.lock:
                self.stats.patterns += 1
        host = self.pipeline.host if self.pipeline is not None else Host.current()
        monitored = report.event_ids[-1] if report.event_ids else 5038
        for event_id in report.event_ids:
            if event_id in (5038, 6281, 6410):
                monitored = event_id
                break
        event = make_event(
            4618,
            {
                "EventId": str(monitored),
                "ComputerName": host.computer,
                "TargetUserSid": opener.sid or "S-1-0-0",
                "TargetUserName": opener.user_name,
                "TargetUserDomain": host.computer.split(".")[0].upper(),
                "TargetLogonId": "0x0",
                "EventCount": str(count),
                "Duration": f"{self.window:g} seconds",
            },
            computer=host.computer,
            time_created=datetime.now(UTC),
            process_id=host.process_id,
            context={
                "rule.description": description,
                "file.path": report.path,
                "process.pid": opener.pid,
                "process.executable": opener.exe,
            },
        )
        if self.pipeline is not None:
            self.pipeline.emit(event)
