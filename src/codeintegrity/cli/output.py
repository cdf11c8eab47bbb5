"""How `verify` prints reports: JSON Lines for machines, a table for people."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..findings import Finding
    from ..report import Report

_STYLE = {"valid": "green", "invalid": "red", "unsigned": "yellow", "malformed": "magenta"}


class JsonWriter:
    """One JSON object per file, written as soon as the file is judged."""

    def add(self, report: Report) -> None:
        sys.stdout.write(json.dumps(report.to_dict(), separators=(",", ":")) + "\n")
        sys.stdout.flush()

    def close(self) -> None:
        return None


class TableWriter:
    """A readable table: verdict, file, signer, events, reasons; then a one-line summary."""

    def __init__(self) -> None:
        self._rows: list[tuple[str, str, str, str, str]] = []
        self._counts: dict[str, int] = {}

    def add(self, report: Report) -> None:
        verdict = str(report.status)
        if report.decision is not None:
            d = report.decision
            verdict += f" / {'allowed' if d.allowed else 'denied'}"
            if not d.allowed and d.mode == "audit":
                verdict += " (audit)"
        self._counts[str(report.status)] = self._counts.get(str(report.status), 0) + 1
        self._rows.append(
            (verdict, report.path, _signer(report), _events(report), _reasons(report))
        )

    def close(self) -> None:
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        console = Console(soft_wrap=False)
        if not console.is_terminal:
            # Piped output is read by people in pagers and logs: do not fold at 80 columns.
            console.width = 200
        table = Table(show_lines=False, header_style="bold")
        for column in ("Verdict", "File", "Signer", "Events", "Reasons"):
            table.add_column(column, overflow="fold")
        for verdict, path, signer, events, reasons in self._rows:
            style = _STYLE.get(verdict.split(" ")[0], "")
            # Text cells: paths and reasons contain '[' which rich would read as markup.
            table.add_row(
                Text(verdict, style=style), Text(path), Text(signer), Text(events), Text(reasons)
            )
        console.print(table)
        total = sum(self._counts.values())
        parts = ", ".join(f"{n} {k}" for k, n in sorted(self._counts.items()))
        console.print(f"{total} file{'s' if total != 1 else ''}: {parts}")


def _signer(report: Report) -> str:
    names = []
    for sig in report.signatures:
        if sig.signer:
            mark = "" if sig.valid else " (bad)"
            names.append(f"#{sig.index} {_cn(sig.signer)}{mark}")
    if report.catalog is not None and report.catalog.signature.signer:
        names.append(f"catalog: {_cn(report.catalog.signature.signer)}")
    return "\n".join(names) or "-"


def _cn(subject: str) -> str:
    """The common name of an RFC 4514 subject, for a narrow column."""
    for part in subject.split(","):
        key, _, value = part.strip().partition("=")
        if key.strip().lower() in ("cn", "common_name", "common name"):
            return value.strip()
    return subject


def _events(report: Report) -> str:
    return ", ".join(str(e) for e in report.event_ids) or "-"


def _reasons(report: Report) -> str:
    """Short reasons for the table: the rule's summary and where; --json has the details."""
    lines = []
    for f in report.findings:
        if str(f.severity) == "info" and f.event_id is None:
            continue
        event = str(f.event_id) if f.event_id else str(f.severity)
        lines.append(f"{event} {f.rule.summary}{_where(f)}")
    if report.decision is not None:
        mode = report.decision.mode
        lines.extend(f"policy {mode}: {f.rule.summary}{_where(f)}" for f in report.decision.reasons)
    if len(lines) > 8:
        lines = lines[:8] + [f"... {len(lines) - 8} more (see --json)"]
    return "\n".join(lines) or "-"


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
