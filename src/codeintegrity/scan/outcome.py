"""What a scan yields for each path it met: exactly one outcome per path.

A judged file travels as its report, or as the report's JSON text (:class:`Encoded`) when it
comes from a worker process or the results cache: the parent of a large scan then only splices
a path into a line of output and reads a few summary fields, and decodes the report only for
what needs all of it (a policy, events, the table, the HTML report).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from .walk import Opened, Skipped, Unreadable

if TYPE_CHECKING:
    from ..report import Decision, Report

# The JSON text of an encoded report starts with this: its path is left empty, so one text
# serves every path it is reported under (and the results cache stores it once).
_NO_PATH = '{"path":""'


@dataclass(frozen=True, slots=True)
class Encoded:
    """A report without a policy decision, as JSON text, with what a scan reads of it."""

    text: str  # json of Report.to_dict() with path "", compact separators (the output's form)
    status: str
    event_ids: tuple[int, ...]
    # The earliest future certificate validity edge among chains judged at "now" (epoch
    # seconds), None if none: the verdict may change then (see verdict_keys.chain_boundary).
    boundary: float | None = None
    storable: bool = True  # False: a primitive failed; may work next time, so never cached

    def decode(self, path: str) -> Report:
        from ..report import Report

        return replace(Report.from_dict(json.loads(self.text)), path=path)


def encode_report(report: Report, now: float | None = None) -> Encoded:
    """The report as :class:`Encoded` (its decision, if any, is left out)."""
    import time

    from ..findings import FindingCode
    from ..verdict_keys import chain_boundary

    bare = replace(report, path="", decision=None)
    text = json.dumps(bare.to_dict(), separators=(",", ":"))
    if not text.startswith(_NO_PATH):
        raise AssertionError("Report.to_dict() must start with its path")
    return Encoded(
        text=text,
        status=str(report.status),
        event_ids=tuple(bare.event_ids),
        boundary=chain_boundary(bare, time.time() if now is None else now),
        storable=not any(f.code is FindingCode.PRIMITIVE_FAILED for f in report.findings),
    )


class Judged:
    """A file that was judged: its report (with the policy decision when there is one), or
    its :class:`Encoded` form and the path it was met under."""

    __slots__ = ("_report", "encoded", "path", "seconds", "size", "opened")

    def __init__(
        self,
        report: Report | None = None,
        seconds: float = 0.0,
        size: int = 0,
        *,
        encoded: Encoded | None = None,
        path: str | None = None,
        opened: Opened | None = None,
    ) -> None:
        if report is None and (encoded is None or path is None):
            raise TypeError("Judged needs a report, or an encoded report and its path")
        self._report = report
        self.encoded = encoded
        self.path: str = report.path if report is not None else path  # type: ignore[assignment]
        self.seconds = seconds
        self.size = size
        # A worker's verification of a file with other names: what it opened (see links.py).
        self.opened = opened

    def __getstate__(self) -> tuple[object, ...]:
        return (self._report, self.encoded, self.path, self.seconds, self.size, self.opened)

    def __setstate__(self, state: tuple[object, ...]) -> None:
        (self._report, self.encoded, self.path, self.seconds, self.size, self.opened) = state  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Judged({self.path!r}, {self.status})"

    @property
    def report(self) -> Report:
        if self._report is None:
            assert self.encoded is not None
            self._report = self.encoded.decode(self.path)
        return self._report

    @property
    def status(self) -> str:
        if self._report is not None:
            return str(self._report.status)
        assert self.encoded is not None
        return self.encoded.status

    @property
    def event_ids(self) -> tuple[int, ...]:
        if self._report is not None:
            return tuple(self._report.event_ids)
        assert self.encoded is not None
        return self.encoded.event_ids

    @property
    def decision(self) -> Decision | None:
        # An encoded report never carries a decision (policies are applied to reports).
        return self._report.decision if self._report is not None else None

    @property
    def ok(self) -> bool:
        return self.status == "valid"

    @property
    def raises_events(self) -> bool:
        """Whether the event pipeline has anything to write for this file."""
        from ..report import raises_events

        return raises_events(self.event_ids, self.decision)

    def json_line(self) -> str:
        """The file's JSON object (the README's contract), as one line of compact JSON."""
        if self._report is None:
            assert self.encoded is not None
            return '{"path":' + json.dumps(self.path) + self.encoded.text[len(_NO_PATH) :]
        return json.dumps(self._report.to_dict(), separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class Crashed:
    """A bug (or a crashed worker) while judging this file; the other files go on."""

    path: str
    message: str


Outcome = Judged | Crashed | Skipped | Unreadable

__all__ = ["Crashed", "Encoded", "Judged", "Outcome", "Skipped", "Unreadable", "encode_report"]


def counts_as_failure(outcome: Judged) -> bool:
    """Whether this file makes the run exit 1.

    A file whose signature verdict is not valid fails the run whatever the policy mode; an
    enforce-mode policy decides for the files it judges (an allow rule can admit an unsigned
    file, a deny rule refuses a validly signed one); in audit mode a denial is only reported.
    """
    decision = outcome.decision
    if decision is None or decision.mode != "enforce":
        return not outcome.ok
    if outcome.status in ("invalid", "malformed"):
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


def outcome_line(outcome: Outcome) -> str:
    """:func:`outcome_dict` as one line of compact JSON (without the newline)."""
    if isinstance(outcome, Judged):
        return outcome.json_line()
    return json.dumps(outcome_dict(outcome), separators=(",", ":"))
