"""`codeintegrity report`: one self-contained HTML file (inline CSS and SVG charts) from the
event store or from verification results.

Heavy libraries (matplotlib, Jinja2) are imported only when a report is written, so importing
this package costs nothing at `codeintegrity verify` start-up.

- :func:`write_report` (source: a store file, a `verify --json` file, or Report values)
- :class:`ResultsCollector` (feed reports one by one, e.g. from `verify --report`)
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from .from_results import ResultsCollector, read_results, summarize_results
from .from_store import ReportInputError, summarize_store
from .model import Summary

if TYPE_CHECKING:
    from ..options import VerifyOptions
    from ..report import Report

__all__ = [
    "ReportInputError",
    "ResultsCollector",
    "Summary",
    "fingerprints_for",
    "write_report",
    "write_summary",
]


def _version() -> str:
    from .. import __version__

    return __version__


def fingerprints_for(
    options: VerifyOptions | None = None, policy_file: str | os.PathLike[str] | None = None
) -> dict[str, str]:
    """What the verdicts depended on: the SHA-256 of the trust anchors (the key the results
    cache uses) and of the policy file's bytes."""
    out: dict[str, str] = {}
    if options is not None:
        from ..authenticode.trust import TrustStore

        trust = options.trust if options.trust is not None else TrustStore.default()
        out["Trust anchors (SHA-256)"] = trust.key.hex()
    if policy_file is not None:
        try:
            digest = hashlib.sha256(Path(policy_file).read_bytes()).hexdigest()
        except OSError as exc:
            digest = f"unreadable: {exc.strerror or exc}"
        out["Policy file (SHA-256)"] = f"{digest}  {os.fspath(policy_file)}"
    return out


def write_summary(summary: Summary, out: str | os.PathLike[str]) -> int:
    """Render ``summary`` to ``out`` (written whole: a temporary file then a rename); return
    the number of bytes written."""
    from .render import render_html

    data = render_html(summary).encode("utf-8")
    target = Path(out)
    partial = target.with_name(f".{target.name}.partial")
    try:
        partial.write_bytes(data)
        partial.replace(target)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise ReportInputError(f"cannot write {target}: {exc.strerror or exc}") from None
    return len(data)


def write_report(
    source: str | os.PathLike[str] | Iterable[Report] | ResultsCollector,
    out: str | os.PathLike[str],
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    computers: Sequence[str] = (),
    fingerprints: dict[str, str] | None = None,
    kind: str = "auto",
) -> Summary:
    """Write the HTML report of ``source`` to ``out`` and return what it shows.

    ``source`` is an event store (SQLite file), a `verify --json` output (JSON Lines), a
    :class:`ResultsCollector` or an iterable of :class:`Report`. ``since``/``until``/
    ``computers`` select events of a store. Raises :class:`ReportInputError` for input that
    cannot be read. ``kind`` ("store" or "results") refuses a path of the other kind; "auto"
    tells them apart by the SQLite header.
    """
    version = _version()
    warm = _import_renderer_beside()
    if isinstance(source, ResultsCollector):
        summary = source.summary(tool_version=version, fingerprints=fingerprints)
    elif isinstance(source, str | os.PathLike):
        path = Path(source)
        is_store = _is_sqlite(path)
        if kind == "store" and not is_store:
            raise ReportInputError(f"{path} is not an event store (SQLite)")
        if kind == "results" and is_store:
            raise ReportInputError(f"{path} is an SQLite file, not `verify --json` output")
        if is_store:
            summary = summarize_store(
                path, since=since, until=until, computers=computers, tool_version=version
            )
            summary.fingerprints.update(fingerprints or {})
        else:
            summary = summarize_results(
                read_results(path),
                source=str(path),
                tool_version=version,
                fingerprints=fingerprints,
            )
    else:
        summary = summarize_results(source, tool_version=version, fingerprints=fingerprints)
    warm.join()
    write_summary(summary, out)
    return summary


def _import_renderer_beside() -> threading.Thread:
    """Import matplotlib and Jinja2 (about a second) on another thread while the summary is
    computed: SQLite releases the GIL while it scans, so the imports use the other core."""

    def load() -> None:
        try:
            import jinja2  # noqa: F401
            import matplotlib.dates  # noqa: F401
            import matplotlib.figure  # noqa: F401
        except ImportError:
            pass  # render_html reports the missing extra in one line

    thread = threading.Thread(target=load, name="report-imports", daemon=True)
    thread.start()
    return thread


def _is_sqlite(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(16) == b"SQLite format 3\x00"
    except OSError as exc:
        raise ReportInputError(f"cannot read {path}: {exc.strerror or exc}") from None
