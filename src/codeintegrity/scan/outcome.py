"""What a scan yields for each path it met: exactly one outcome per path."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .walk import Skipped, Unreadable

if TYPE_CHECKING:
    from ..report import Report


@dataclass(frozen=True, slots=True)
class Judged:
    """A file that was judged (its report carries the policy decision when there is one)."""

    report: Report
    seconds: float = 0.0
    size: int = 0

    @property
    def path(self) -> str:
        return self.report.path


@dataclass(frozen=True, slots=True)
class Crashed:
    """A bug (or a crashed worker) while judging this file; the other files go on."""

    path: str
    message: str


Outcome = Judged | Crashed | Skipped | Unreadable

__all__ = ["Crashed", "Judged", "Outcome", "Skipped", "Unreadable"]


def counts_as_failure(report: Report) -> bool:
    """Whether this file makes the run exit 1.

    A file whose signature verdict is not valid fails the run whatever the policy mode; an
    enforce-mode policy decides for the files it judges (an allow rule can admit an unsigned
    file, a deny rule refuses a validly signed one); in audit mode a denial is only reported.
    """
    decision = report.decision
    if decision is None or decision.mode != "enforce":
        return not report.ok
    if report.status.value in ("invalid", "malformed"):
        return True
    return not decision.allowed


def outcome_dict(outcome: Outcome) -> dict[str, object]:
    """The JSON object for one outcome (the README's JSON contract): a report's own shape for
    a judged file; ``status`` "error" with ``error`` {errno, message, internal} for a path that
    could not be read or hit a bug; ``status`` "skipped" with ``reason`` and ``message`` for a
    path the walk did not judge."""
    if isinstance(outcome, Judged):
        return outcome.report.to_dict()
    if isinstance(outcome, Skipped):
        return {
            "path": outcome.path,
            "status": "skipped",
            "reason": outcome.reason,
            "message": outcome.message,
        }
    if isinstance(outcome, Unreadable):
        error = {"errno": outcome.errno, "message": outcome.message, "internal": False}
    else:
        error = {"errno": None, "message": outcome.message, "internal": True}
    return {"path": outcome.path, "status": "error", "error": error}
