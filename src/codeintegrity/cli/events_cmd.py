"""`codeintegrity events`: list, filter and export the events in the store."""

from __future__ import annotations

import json
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click

from . import common_options as shared
from . import exit_codes

if TYPE_CHECKING:
    from ..events.model import Event

_CHANNELS = {
    "security": "Security",
    "codeintegrity": "Microsoft-Windows-CodeIntegrity/Operational",
}
EXPORT_BATCH = 1000
# Audit-mode policy denials ("would have been blocked") are failures for a reader, whatever
# outcome the Windows schema gives them (3076 is an informational record there).
_FAILURES = frozenset({3076})


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@shared.read_store_option(
    "Store file to read (default: the per-user store, see below); it must exist."
)
@click.option("--id", "event_ids", type=int, multiple=True, help="Event ID (repeatable).")
@shared.time_window_options
@click.option("--path", "path_contains", metavar="TEXT", help="Path contains TEXT.")
@click.option(
    "--outcome",
    type=click.Choice(["success", "failure"]),
    help="failure: files that failed a check or were denied, including audit-mode policy "
    "denials (3076, would have been blocked); success: the others.",
)
@click.option(
    "--channel",
    type=click.Choice(sorted(_CHANNELS)),
    help="security: the Security log (5038, 6281, 6410, 4612, 5056, 5057); codeintegrity: "
    "Microsoft-Windows-CodeIntegrity/Operational (3089, 3033, 3063, 3076, 3077).",
)
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    help="Only the newest N matching events (listed oldest first).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "jsonl", "xml", "flat"]),
    default="table",
    show_default=True,
    help="table; json (array of ECS documents); jsonl (ECS lines); xml (<Events> document); "
    "flat (JSON lines with Sigma field names).",
)
@click.option(
    "--export",
    "export_uris",
    multiple=True,
    metavar="URI",
    help="Write the selected events to a sink (jsonl:PATH, xml:PATH, sqlite:PATH, "
    "syslog+udp://HOST:PORT, syslog+tcp://HOST:PORT, relp://HOST:PORT, -) instead of listing "
    "them; repeatable.",
)
def events(
    store_path: str | None,
    event_ids: tuple[int, ...],
    since: datetime | None,
    until: datetime | None,
    path_contains: str | None,
    outcome: str | None,
    channel: str | None,
    limit: int | None,
    fmt: str,
    export_uris: tuple[str, ...],
) -> None:
    """List, filter and export the audit events recorded by `codeintegrity verify`.

    The default store is $CODEINTEGRITY_HOME/events.sqlite3, else
    $XDG_STATE_HOME/codeintegrity/events.sqlite3 (~/.local/state/codeintegrity/ when unset;
    %LOCALAPPDATA%\\codeintegrity\\ on Windows). Exit status: 0 done, 4 store or sink error
    (a --store file that does not exist is one; a default store not created yet is empty).
    """
    from pathlib import Path

    from ..errors import CIError
    from ..events.paths import default_store_path
    from ..events.store import EventFilter, EventStore, StoreError

    path = Path(store_path) if store_path else default_store_path()
    selection = EventFilter(
        event_ids=event_ids,
        since=since,
        until=until,
        path_contains=path_contains,
        channel=_CHANNELS[channel] if channel else None,
    )
    try:
        if not path.exists():
            if store_path:
                raise StoreError(f"event store {path} not found")
            click.echo(f"codeintegrity: no event store at {path} (nothing recorded yet)", err=True)
            selected: Iterable[Event] = ()
            store = None
        else:
            store = EventStore(path)
            selected = _newest(_with_outcome(store.query(selection), outcome), limit)
        try:
            if export_uris:
                _export(selected, export_uris)
            else:
                _list(selected, fmt)
        finally:
            if store is not None:
                store.close()
    except CIError as exc:
        click.echo(f"codeintegrity: {exc.diagnostics()}", err=True)
        sys.exit(exit_codes.CONFIG)


def outcome_of(event: Event) -> str:
    """success or failure as ``--outcome`` means it (an audit-mode denial is a failure)."""
    return "failure" if event.event_id in _FAILURES else event.outcome


def _with_outcome(selected: Iterable[Event], outcome: str | None) -> Iterator[Event]:
    return (e for e in selected if outcome is None or outcome_of(e) == outcome)


def _newest(selected: Iterator[Event], limit: int | None) -> Iterable[Event]:
    """The last ``limit`` events of a stream in record order (memory: ``limit`` events)."""
    return selected if limit is None else deque(selected, maxlen=limit)


def _export(selected: Iterable[Event], uris: tuple[str, ...]) -> None:
    from ..events.sinks import Sink, open_sink

    sinks: list[Sink] = []
    try:
        # Open all first: a bad URI fails before anything is written.
        sinks.extend(open_sink(uri) for uri in uris)
        counts = dict.fromkeys(uris, 0)
        batch: list[Event] = []

        def flush() -> None:
            for sink in sinks:
                sink.write(batch)
                counts[sink.uri] += len(batch)
            batch.clear()

        for event in selected:
            batch.append(event)
            if len(batch) >= EXPORT_BATCH:
                flush()
        if batch:
            flush()
    except OSError as exc:  # SinkWriteError: the export is incomplete, say so
        from ..errors import SinkError

        raise SinkError(str(exc)) from None
    finally:
        for sink in sinks:
            sink.close()
    for sink in sinks:
        # A TCP collector that never acknowledged what it was sent: the export is incomplete.
        take = getattr(sink, "take_late_losses", None)
        late, reason = take() if take is not None else (0, "")
        if late:
            from ..errors import SinkError

            raise SinkError(reason)
    for uri, count in counts.items():
        click.echo(f"exported {count} events to {uri}", err=True)


def _list(selected: Iterable[Event], fmt: str) -> None:
    from ..events.render_ecs import render_ecs, render_flat, to_ecs
    from ..events.render_xml import render_xml_document

    out = sys.stdout.buffer
    if fmt == "table":
        _table(selected)
    elif fmt == "json":
        docs = [to_ecs(e) for e in selected]
        out.write(json.dumps(docs, ensure_ascii=False, indent=2).encode("utf-8") + b"\n")
    elif fmt == "xml":
        out.write(render_xml_document(selected))
    else:
        render = render_ecs if fmt == "jsonl" else render_flat
        for event in selected:
            out.write(render(event) + b"\n")
    out.flush()


def _table(selected: Iterable[Event]) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(highlight=False, soft_wrap=False)
    if not console.is_terminal:
        # Piped output goes to pagers, logs and grep: do not fold at 80 columns.
        console.width = 200
    table = Table(show_edge=False, pad_edge=False)
    for column in ("Record", "Time (UTC)", "Event", "Channel", "Outcome", "Subject"):
        table.add_column(column, overflow="fold")
    rows = 0
    for event in selected:
        rows += 1
        channel = "Security" if event.channel == "Security" else "CodeIntegrity"
        subject = event.path
        if subject is None:
            subject = "; ".join(f"{k}={v}" for k, v in event.data if not k.startswith("Subject"))
        when = event.time_created.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
        outcome = outcome_of(event)
        # Text cells, never markup strings: paths and field values may contain '['.
        table.add_row(
            Text(str(event.record_id)),
            Text(when),
            Text(str(event.event_id)),
            Text(channel),
            Text(outcome, style="red" if outcome == "failure" else ""),
            Text(subject),
        )
    if rows:
        console.print(table)
    console.print(f"{rows} event(s)", markup=False)
