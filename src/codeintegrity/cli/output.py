"""How `verify` prints outcomes as each file finishes: a table for people, JSON Lines or CSV
for machines, or nothing (--quiet)."""

from __future__ import annotations

import csv
import re
import shutil
import sys
import textwrap
from typing import TYPE_CHECKING, Protocol

import click

if TYPE_CHECKING:
    from ..findings import Finding
    from ..report import Report, SignatureResult
    from ..scan.outcome import Outcome
    from ..scan.run import BackgroundCount
    from ..scan.tally import Tally

_STYLE = {
    "valid": "green",
    "invalid": "red",
    "unsigned": "yellow",
    "malformed": "magenta",
    "error": "red",
    "skipped": "cyan",
}


class Writer(Protocol):
    def add(self, outcome: Outcome) -> None: ...

    def close(self, tally: Tally) -> None: ...


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


class QuietWriter:
    """--quiet: the exit status says it all."""

    def add(self, outcome: Outcome) -> None:
        return None

    def close(self, tally: Tally) -> None:
        return None


class JsonWriter:
    """One JSON object per input path, written as soon as it is judged."""

    def add(self, outcome: Outcome) -> None:
        from ..scan.outcome import outcome_line

        _write(outcome_line(outcome) + "\n")

    def close(self, tally: Tally) -> None:
        return None


CSV_COLUMNS = (
    "path",
    "status",
    "decision",
    "events",
    "signer",
    "issuer",
    "root",
    "timestamp",
    "authenticode_sha256",
    "reasons",
)


class CsvWriter:
    """One row per input path (RFC 4180, header first); lists inside a cell joined by '; '."""

    def __init__(self) -> None:
        self._csv = csv.writer(sys.stdout, lineterminator="\r\n")
        self._csv.writerow(CSV_COLUMNS)
        sys.stdout.flush()

    def add(self, outcome: Outcome) -> None:
        from ..scan.outcome import Judged, Skipped
        from ..scan.tally import decision_word

        if isinstance(outcome, Judged):
            report = outcome.report
            sig = report.signatures[0] if report.signatures else None
            if sig is None and report.catalog is not None:
                sig = report.catalog.signature
            row = [
                report.path,
                str(report.status),
                decision_word(outcome) or "",
                " ".join(str(e) for e in report.event_ids),
                (sig.signer or "") if sig else "",
                (sig.issuer or "") if sig else "",
                _root(sig) if sig else "",
                sig.timestamp.isoformat() if sig and sig.timestamp else "",
                report.authentihash.get("sha256", ""),
                "; ".join(_reason_lines(report)),
            ]
        elif isinstance(outcome, Skipped):
            row = [outcome.path, "skipped", "", "", "", "", "", "", "", outcome.message]
        else:
            row = [outcome.path, "error", "", "", "", "", "", "", "", outcome.message]
        self._csv.writerow(row)
        sys.stdout.flush()

    def close(self, tally: Tally) -> None:
        return None


class TableWriter:
    """One line per file (status, decision, path: never broken), details indented below and
    wrapped to the width (COLUMNS, else the terminal, else 80); a summary line at the end."""

    def __init__(self, *, hashes: tuple[str, ...] = (), flat: tuple[str, ...] = ()) -> None:
        self.width = max(40, shutil.get_terminal_size((80, 24)).columns)
        self.color = sys.stdout.isatty()
        self.hashes = hashes
        self.flat = flat
        self.policy = False

    def add(self, outcome: Outcome) -> None:
        from ..scan.outcome import Judged, Skipped, Unreadable
        from ..scan.tally import decision_word

        if isinstance(outcome, Judged):
            report = outcome.report
            status = str(report.status)
            decision = decision_word(outcome)
            details = self._details(report)
        elif isinstance(outcome, Skipped):
            status, decision = "skipped", None
            details = [f"{outcome.reason}: {outcome.message}"]
        elif isinstance(outcome, Unreadable):
            status, decision = "error", None
            code = f"errno {outcome.errno}: " if outcome.errno else ""
            details = [f"cannot read: {code}{outcome.message}"]
        else:
            status, decision = "error", None
            details = [f"internal error: {outcome.message}"]
        if decision is not None:
            self.policy = True
        head = click.style(f"{status:<9}", fg=_STYLE.get(status)) if self.color else f"{status:<9}"
        column = f" {decision or '-':<12}" if (decision is not None or self.policy) else ""
        lines = [f"{head}{column} {outcome.path}"]
        for detail in details:
            lines.extend(
                textwrap.wrap(
                    detail,
                    self.width,
                    initial_indent="    ",
                    subsequent_indent="        ",
                    break_on_hyphens=False,
                )
                or ["    "]
            )
        _write("\n".join(lines) + "\n")

    def _details(self, report: Report) -> list[str]:
        out = [
            f"signer #{sig.index}: {_cn(sig.signer)}{_mark(sig)}{_root_text(sig)}"
            for sig in report.signatures
            if sig.signer
        ]
        if report.catalog is not None:
            sig = report.catalog.signature
            name = _cn(sig.signer) if sig.signer else "?"
            out.append(f"catalog signer: {name}{_mark(sig)}{_root_text(sig)}")
            out.append(f"catalog: {report.catalog.path}")
        out.extend(
            f"authenticode {a}: {report.authentihash[a]}"
            for a in self.hashes
            if a in report.authentihash
        )
        out.extend(f"file {a}: {report.flat_hash[a]}" for a in self.flat if a in report.flat_hash)
        out.extend(_reason_lines(report))
        return out

    def close(self, tally: Tally) -> None:
        _write(tally.summary_line() + "\n")


def _root(sig: SignatureResult) -> str:
    return sig.chain[-1].subject if sig.trusted and sig.chain else ""


def _root_text(sig: SignatureResult) -> str:
    root = _root(sig)
    return f" (root: {_cn(root)})" if root else ""


def _mark(sig: SignatureResult) -> str:
    """The same marks for embedded and catalog signers."""
    if sig.valid:
        return ""
    if sig.signature_valid and not sig.trusted:
        return " (untrusted)"
    return " (bad)"


def _cn(subject: str) -> str:
    """The common name of an RFC 4514 subject, for a narrow column."""
    for part in subject.split(","):
        key, _, value = part.strip().partition("=")
        if key.strip().lower() in ("cn", "common_name", "common name"):
            return value.strip()
    return subject


_RULE_NAME = re.compile(r"rule '([^']*)'")


def _reason_lines(report: Report, limit: int = 8) -> list[str]:
    """Each finding once; then the policy's own reasons, each matched rule named once (a deny
    rule matches several digests of one file) and without repeating the report's errors."""
    lines: list[str] = []
    own: set[tuple[object, str]] = set()
    for f in report.findings:
        own.add((f.code, f.detail))
        if str(f.severity) == "info" and f.event_id is None:
            continue
        event = str(f.event_id) if f.event_id else str(f.severity)
        lines.append(f"{event} {f.rule.summary}{_where(f)}")
    if report.decision is not None:
        mode = report.decision.mode
        for f in report.decision.reasons:
            if (f.code, f.detail) in own:
                continue
            match = _RULE_NAME.search(f.detail)
            name = f" '{match.group(1)}'" if match else ""
            line = f"policy {mode}: {f.rule.summary}{name}"
            if line not in lines:
                lines.append(line)
    if len(lines) > limit:
        lines = lines[:limit] + [f"... {len(lines) - limit} more (see --json)"]
    return lines


def _where(f: Finding) -> str:
    parts = []
    if f.signature is not None and f.signature >= 0:
        parts.append(f"sig {f.signature}")
    if f.page is not None:
        parts.append(f"page {f.page}")
    if f.section:
        parts.append(f.section)
    if f.offset is not None:
        parts.append(f"@{f.offset:#x}")
    return f" [{', '.join(parts)}]" if parts else ""


def stderr_line(outcome: Outcome) -> str | None:
    from ..scan.outcome import Crashed, Skipped, Unreadable

    if isinstance(outcome, Unreadable):
        return f"codeintegrity: cannot read {outcome.path}: {outcome.message}"
    if isinstance(outcome, Crashed):
        return f"codeintegrity: internal error on {outcome.path}: {outcome.message}"
    if isinstance(outcome, Skipped):
        return f"codeintegrity: skipped {outcome.path}: {outcome.message}"
    return None


def is_failure(outcome: Outcome) -> bool:
    """--only-failures: files not valid or denied (in any mode), and paths not read."""
    from ..scan.outcome import Judged, Skipped

    if isinstance(outcome, Judged):
        decision = outcome.decision
        return not outcome.ok or (decision is not None and not decision.allowed)
    return not isinstance(outcome, Skipped)


class ProgressBar:
    """A live line on stderr (rich): files and bytes done, rates, counts by verdict and
    decision. Only for a terminal unless forced; refreshed by rich's own thread (10 Hz)."""

    def __init__(self, count: BackgroundCount | None = None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            BarColumn(bar_width=None, pulse_style="cyan"),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=True,
            # Results printed on the same terminal go above the live line; piped results stay
            # on stdout (rich would otherwise move them to the terminal).
            redirect_stdout=sys.stdout.isatty(),
            redirect_stderr=True,
        )
        self._task = self._progress.add_task("", total=None)
        self._count = count
        self._progress.start()

    def update(self, tally: Tally) -> None:
        elapsed = max(tally.elapsed, 1e-9)
        judged = sum(tally.statuses[k] for k in ("valid", "invalid", "unsigned", "malformed"))
        counts = " ".join(f"{k} {n}" for k, n in sorted(tally.statuses.items()))
        decisions = " ".join(f"{k} {n}" for k, n in sorted(tally.decisions.items()))
        text = (
            f"{tally.total} files {tally.bytes / 1e6:.1f} MB | {judged / elapsed:.0f} files/s "
            f"{tally.bytes / 1e6 / elapsed:.1f} MB/s | {counts}"
        )
        if decisions:
            text += f" | {decisions}"
        total = self._count.total if self._count is not None else None
        if total is not None and tally.total:
            left = max(0, total - tally.total)
            text += f" | {left} left, ETA {left * elapsed / tally.total:.0f} s"
            self._progress.update(self._task, total=max(total, tally.total), completed=tally.total)
        self._progress.update(self._task, description=text)

    def close(self) -> None:
        if self._count is not None:
            self._count.stop()
        self._progress.stop()
