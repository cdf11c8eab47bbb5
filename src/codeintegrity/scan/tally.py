"""Counts over a scan's outcomes: the summary line and the exit status come from here."""

from __future__ import annotations

import heapq
import time
from collections import Counter
from dataclasses import dataclass, field

from .outcome import Crashed, Judged, Outcome, counts_as_failure
from .walk import Skipped, Unreadable

# Exit statuses (mirrored in cli/exit_codes.py, which documents them).
OK = 0
NOT_VALID = 1
UNREADABLE = 3
EVENTS_LOST = 6
INTERNAL = 70


def decision_word(outcome: Judged) -> str | None:
    """allowed | denied | audit-denied (would be denied in enforce mode) | None."""
    decision = outcome.decision
    if decision is None:
        return None
    if decision.allowed:
        return "allowed"
    return "denied" if decision.mode == "enforce" else "audit-denied"


@dataclass
class Tally:
    started: float = field(default_factory=time.perf_counter)
    statuses: Counter[str] = field(default_factory=Counter)
    decisions: Counter[str] = field(default_factory=Counter)
    events: Counter[int] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    failures: int = 0  # files that make the run exit 1
    unreadable: int = 0
    internal: int = 0
    bytes: int = 0
    # (seconds, path) of the slowest files, a min-heap of at most 5
    slowest: list[tuple[float, str]] = field(default_factory=list)

    def add(self, outcome: Outcome) -> None:
        if isinstance(outcome, Judged):
            self.statuses[outcome.status] += 1
            word = decision_word(outcome)
            if word is not None:
                self.decisions[word] += 1
            self.events.update(outcome.event_ids)
            self.failures += counts_as_failure(outcome)
            self.bytes += outcome.size
            entry = (outcome.seconds, outcome.path)
            # A results-cache answer (no seconds) was not judged in this run.
            if outcome.seconds > 0 and len(self.slowest) < 5:
                heapq.heappush(self.slowest, entry)
            elif outcome.seconds > 0 and entry > self.slowest[0]:
                heapq.heapreplace(self.slowest, entry)
        elif isinstance(outcome, Crashed):
            self.statuses["error"] += 1
            self.internal += 1
        elif isinstance(outcome, Unreadable):
            self.statuses["error"] += 1
            self.unreadable += 1
        elif isinstance(outcome, Skipped):
            self.statuses["skipped"] += 1
            self.skipped[outcome.reason] += 1

    @property
    def total(self) -> int:
        return sum(self.statuses.values())

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def exit_status(self, *, events_lost: bool = False) -> int:
        """One code, by precedence: 70 internal error > 3 unreadable > 1 not valid or denied
        > 6 events lost > 0."""
        if self.internal:
            return INTERNAL
        if self.unreadable:
            return UNREADABLE
        if self.failures:
            return NOT_VALID
        if events_lost:
            return EVENTS_LOST
        return OK

    def summary_line(self) -> str:
        """'5 files: 2 valid, 1 invalid, ...; policy: 2 allowed, 1 denied; 1 skipped (...)'."""
        n = self.total
        order = ("valid", "invalid", "unsigned", "malformed", "error", "skipped")
        parts = [f"{self.statuses[k]} {k}" for k in order if self.statuses[k]]
        line = f"{n} file{'s' if n != 1 else ''}: {', '.join(parts) or 'none'}"
        if self.decisions:
            names = (
                ("allowed", "allowed"),
                ("denied", "denied"),
                ("audit-denied", "would be denied (audit)"),
            )
            line += "; policy: " + ", ".join(
                f"{self.decisions[k]} {label}" for k, label in names if self.decisions[k]
            )
        if self.skipped:
            line += (
                " (skipped: "
                + ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items()))
                + ")"
            )
        return line

    def detail_lines(self) -> list[str]:
        """The end summary for people: events, bytes, speed, the slowest files."""
        elapsed = self.elapsed
        judged = sum(self.statuses[k] for k in ("valid", "invalid", "unsigned", "malformed"))
        rate = judged / elapsed if elapsed > 0 else 0.0
        lines = [
            f"{judged} judged, {self.bytes / 1e6:.1f} MB in {elapsed:.2f} s "
            f"({rate:.1f} files/s, {self.bytes / 1e6 / elapsed if elapsed > 0 else 0:.1f} MB/s)"
        ]
        if self.events:
            lines.append(
                "events: " + ", ".join(f"{eid} x{n}" for eid, n in sorted(self.events.items()))
            )
        if self.slowest and judged > 1:
            lines.append("slowest:")
            lines.extend(
                f"  {seconds * 1000:8.1f} ms  {path}"
                for seconds, path in sorted(self.slowest, reverse=True)
            )
        return lines
