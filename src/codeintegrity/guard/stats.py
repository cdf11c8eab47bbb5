"""The guard's counters and decision latencies (what ``guard status`` and the stop report show)."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..events.pipeline import EventPipeline


@dataclass(slots=True)
class GuardStats:
    """Counters of one guard run. Increments happen under the guard's lock, except
    ``busy_polled``, which only the event thread writes."""

    allowed: int = 0
    denied: int = 0
    audited: int = 0  # allowed in audit mode although the rules would deny
    ignored: int = 0  # not ours to judge: own pid, outside the trees, not a regular MZ file
    judged: int = 0  # verifications run
    timeouts: int = 0  # answered by the fail mode because no verdict came in time
    overflows: int = 0  # answered by the fail mode because the queue was full
    expired: int = 0  # dropped from the queue unjudged (answered by timeout before a worker)
    errors: int = 0  # a verification that raised (answered by the fail mode)
    coalesced: int = 0  # opens that waited for a verification already running
    kernel_overflows: int = 0  # FAN_Q_OVERFLOW: the kernel queue dropped notifications
    read_errors: int = 0  # read() of the group failed (no fd left): the kernel denied that open
    queue_max_depth: int = 0
    busy_polled: int = 0  # reads answered while busy polling, without a sleep before them
    patterns: int = 0  # 4618 raised
    control_refused: int = 0  # 4615 raised
    control_bad_mac: int = 0  # 4816 raised
    latencies_us: deque[int] = field(default_factory=lambda: deque(maxlen=100_000))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def latency(self, microseconds: int) -> None:
        self.latencies_us.append(microseconds)  # deque.append is atomic

    def percentile(self, fraction: float) -> int | None:
        values = sorted(self.latencies_us)
        if not values:
            return None
        index = min(len(values) - 1, max(0, round(fraction * (len(values) - 1))))
        return values[index]

    def snapshot(self, **extra: int) -> dict[str, int | None]:
        """Counters as a flat mapping (JSON-ready)."""
        with self.lock:
            out: dict[str, int | None] = {
                name: getattr(self, name)
                for name in (
                    "allowed",
                    "denied",
                    "audited",
                    "ignored",
                    "judged",
                    "timeouts",
                    "overflows",
                    "expired",
                    "errors",
                    "coalesced",
                    "kernel_overflows",
                    "read_errors",
                    "queue_max_depth",
                    "busy_polled",
                    "patterns",
                    "control_refused",
                    "control_bad_mac",
                )
            }
        out["latency_p50_us"] = self.percentile(0.50)
        out["latency_p99_us"] = self.percentile(0.99)
        out.update(extra)
        return out


def format_report(snapshot: dict[str, int | None]) -> list[str]:
    """The stop report, one ``name: value`` line each, like fapolicyd's."""
    return [f"{name}: {'-' if value is None else value}" for name, value in snapshot.items()]


def events_lost(pipeline: EventPipeline | None) -> int:
    """Events the sinks' queues dropped so far (each sink announces its own with a 4612)."""
    workers = getattr(pipeline, "_workers", ())  # the pipeline keeps its counts per sink
    return sum(int(getattr(worker, "discarded", 0)) for worker in workers)
