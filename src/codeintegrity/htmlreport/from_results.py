"""Summarise verification results: :class:`Report` values, or the JSON Lines `verify --json`
prints.

Results know every file, valid ones included, with finding codes and whole chains, but carry no
time or computer unless the caller supplies them (``verify --report`` does: the time each file
was judged). Only counters and a bounded heap of the worst files are kept, so memory does not
grow with the number of files.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import CIError
from ..findings import RULES, Severity
from .from_store import ReportInputError
from .model import (
    FAILING_ORDER,
    STATUSES,
    TIMELINE_BUCKETS,
    TOP_COMPUTERS,
    TOP_FAILING,
    TOP_REASONS,
    TOP_SIGNERS,
    ComputerRow,
    FailingFile,
    Reason,
    SignerRow,
    Summary,
    Timeline,
)

if TYPE_CHECKING:
    from ..report import Report, SignatureResult

MAX_DETAILS = 20  # findings listed under one failing file
MAX_TIMES = 1_000_000  # judging times kept for the timeline (then sampled 1 in 2, ...)


def _cn(name: str | None) -> str:
    if not name:
        return ""
    from ..events.build import common_name

    return common_name(name)


@dataclass(slots=True)
class _Signer:
    issuer: str
    root: str
    trusted: bool
    files: int = 0
    valid: int = 0


class ResultsCollector:
    """Counts reports as they come; :meth:`summary` gives the :class:`Summary` to render.

    ``verify --report`` feeds it each report as it is judged, so a run over 100,000 files keeps
    counters and the top failing files only.
    """

    def __init__(self, source: str = "verification results") -> None:
        self.source = source
        self._status: Counter[str] = Counter()
        self._events: Counter[int] = Counter()
        self._reasons: Counter[str] = Counter()
        self._signers: dict[tuple[str, bool], _Signer] = {}
        self._computers: dict[str, list[int]] = {}  # files, events, denied, audit
        self._computer_states: dict[str, Counter[str]] = {}
        self._failing: list[tuple[tuple[int, str], FailingFile]] = []  # cut to the top N
        self._failing_total = 0
        self._times: list[float] = []
        self._time_ids: list[tuple[int, ...]] = []
        self._policies: set[tuple[str, str]] = set()
        self.files = self.allowed = self.denied = self.audit_denied = 0

    def add(
        self, report: Report, *, when: datetime | None = None, computer: str | None = None
    ) -> None:
        self.files += 1
        status = str(report.status)
        self._status[status] += 1
        event_ids = list(report.event_ids)
        decision = report.decision
        denied = audit = False
        if decision is not None:
            self._policies.add((decision.policy_name, decision.policy_id))
            if decision.allowed:
                self.allowed += 1
            elif decision.mode == "enforce":
                self.denied += 1
                denied = True
                event_ids.append(3077)
            else:
                self.audit_denied += 1
                audit = True
                event_ids.append(3076)
        self._events.update(event_ids)
        codes = {f.code for f in report.findings if f.severity is not Severity.INFO}
        if decision is not None and not decision.allowed:
            codes |= {f.code for f in decision.reasons}
        self._reasons.update(str(code) for code in codes)
        self._add_signer(report, status)
        if computer is not None:
            counts = self._computers.setdefault(computer, [0, 0, 0, 0])
            counts[0] += 1
            counts[1] += len(event_ids)
            counts[2] += denied
            counts[3] += audit
            self._computer_states.setdefault(computer, Counter())[status] += 1
        if when is not None and event_ids:
            self._times.append(when.timestamp())
            self._time_ids.append(tuple(event_ids))
        if status != "valid" or denied or audit:
            self._add_failing(report, status, tuple(sorted(set(event_ids))), when, computer)

    def _add_signer(self, report: Report, status: str) -> None:
        sig: SignatureResult | None = None
        if report.signatures:
            sig = report.signatures[0]
        elif report.catalog is not None:
            sig = report.catalog.signature
        if sig is None or not sig.signer:
            return
        key = (_cn(sig.signer), sig.trusted)
        entry = self._signers.get(key)
        if entry is None:
            root = sig.chain[-1].subject if sig.chain else ""
            entry = self._signers[key] = _Signer(_cn(sig.issuer), _cn(root), sig.trusted)
        entry.files += 1
        entry.valid += status == "valid"

    def _add_failing(
        self,
        report: Report,
        status: str,
        event_ids: tuple[int, ...],
        when: datetime | None,
        computer: str | None,
    ) -> None:
        self._failing_total += 1
        rank = (FAILING_ORDER.get(status, 3), report.path)
        if len(self._failing) >= 2 * TOP_FAILING:
            self._failing.sort(key=lambda entry: entry[0])
            del self._failing[TOP_FAILING:]
        if len(self._failing) >= TOP_FAILING and rank >= self._failing[TOP_FAILING - 1][0]:
            return  # after a cut the list is sorted: this file would not be shown
        findings = [f for f in report.findings if f.severity is not Severity.INFO]
        if report.decision is not None and not report.decision.allowed:
            findings += list(report.decision.reasons)
        reasons = tuple(dict.fromkeys(str(f.code) for f in findings))
        details = tuple((str(f.code), f.detail) for f in findings[:MAX_DETAILS])
        if report.error and not details:
            details = (("error", report.error),)
        sig = report.signatures[0] if report.signatures else None
        item = FailingFile(
            path=report.path,
            status=status,
            reasons=reasons,
            event_ids=event_ids,
            computer=computer,
            time=when,
            signer=_cn(sig.signer) if sig is not None else None,
            details=details,
        )
        self._failing.append((rank, item))

    def summary(
        self,
        *,
        tool_version: str = "",
        fingerprints: dict[str, str] | None = None,
    ) -> Summary:
        out = Summary(
            source=self.source,
            source_kind="results",
            tool_version=tool_version,
            generated=datetime.now(UTC),
            files=self.files,
            by_status={s: self._status.get(s, 0) for s in STATUSES},
            allowed=self.allowed,
            denied=self.denied,
            audit_denied=self.audit_denied,
            policy_applied=bool(self._policies),
            event_count=sum(self._events.values()),
            event_counts=dict(sorted(self._events.items())),
            fingerprints=dict(fingerprints or {}),
            policies=sorted(self._policies),
        )
        out.reasons_total = len(self._reasons)
        out.reasons = [
            Reason(code, n, RULES_BY_NAME[code].event_id, RULES_BY_NAME[code].summary)
            if code in RULES_BY_NAME
            else Reason(code, n)
            for code, n in self._reasons.most_common(TOP_REASONS)
        ]
        ranked = sorted(self._signers.items(), key=lambda item: (-item[1].files, item[0][0]))
        out.signers_total = len(ranked)
        out.signers = [
            SignerRow(name, s.issuer, s.root, trusted, s.files, s.valid, s.files - s.valid)
            for (name, trusted), s in ranked[:TOP_SIGNERS]
        ]
        kept = sorted(self._failing, key=lambda entry: entry[0])[:TOP_FAILING]
        out.failing = [item for _rank, item in kept]
        out.failing_total = self._failing_total
        hosts = sorted(self._computers.items(), key=lambda item: (-item[1][0], item[0]))
        out.computers_total = len(hosts)
        out.computers = [
            ComputerRow(name, c[0], dict(self._computer_states[name]), c[1], c[2], c[3])
            for name, c in hosts[:TOP_COMPUTERS]
        ]
        self._timeline(out)
        if not self._times:
            out.notes.append("The results carry no judging times: there is no timeline.")
        return out

    def _timeline(self, out: Summary) -> None:
        if not self._times:
            return
        start, end = min(self._times), max(self._times)
        out.first = datetime.fromtimestamp(start, UTC)
        out.last = datetime.fromtimestamp(end, UTC)
        width = max((end - start) / TIMELINE_BUCKETS, 1e-6)
        series: dict[int, list[int]] = {}
        for stamp, ids in zip(self._times, self._time_ids, strict=True):
            slot = min(int((stamp - start) / width), TIMELINE_BUCKETS - 1)
            for event_id in ids:
                series.setdefault(event_id, [0] * TIMELINE_BUCKETS)[slot] += 1
        out.timeline = Timeline(out.first, width, dict(sorted(series.items())))


RULES_BY_NAME = {str(code): rule for code, rule in RULES.items()}


def read_results(path: str | Path) -> Iterator[Report]:
    """The reports of a `verify --json` output file, one per non-blank line."""
    from ..report import Report

    source = Path(path)
    try:
        handle = source.open("r", encoding="utf-8", errors="surrogateescape")
    except OSError as exc:
        raise ReportInputError(f"cannot read {source}: {exc.strerror or exc}") from None
    with handle:
        try:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    yield Report.from_dict(json.loads(line))
                except ValueError:
                    raise ReportInputError(f"{source}:{number}: not JSON") from None
                except CIError as exc:
                    raise ReportInputError(f"{source}:{number}: {exc}") from None
        except OSError as exc:
            raise ReportInputError(f"cannot read {source}: {exc.strerror or exc}") from None


def summarize_results(
    reports: Iterable[Report],
    *,
    source: str = "verification results",
    tool_version: str = "",
    fingerprints: dict[str, str] | None = None,
) -> Summary:
    collector = ResultsCollector(source)
    for report in reports:
        collector.add(report)
    return collector.summary(tool_version=tool_version, fingerprints=fingerprints)
