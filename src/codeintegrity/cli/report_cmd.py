"""`codeintegrity report`: write an HTML report of the event store or of `verify --json` output."""

from __future__ import annotations

import sys
from datetime import datetime

import click

from . import common_options as shared
from . import exit_codes


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@shared.read_store_option("Event store to read (default: the per-user store, as `events`).")
@click.option(
    "--results",
    "results_path",
    type=click.Path(dir_okay=False, path_type=str),
    help="Read the JSON Lines of `verify --json` instead of a store.",
)
@shared.time_window_options
@click.option(
    "--computer",
    "computers",
    multiple=True,
    metavar="NAME",
    help="Only events of this computer (repeatable).",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=str),
    help="HTML file to write (one self-contained file).",
)
def report(
    store_path: str | None,
    results_path: str | None,
    since: datetime | None,
    until: datetime | None,
    computers: tuple[str, ...],
    output: str,
) -> None:
    """Write one self-contained HTML report (inline CSS and SVG charts, no network): headline
    numbers, verdicts and decisions, events by ID over time, top reasons, signers, failing
    files, computers, tool version and fingerprints.

    The input is the event store (default) or, with --results, the output of `verify --json`.
    Exit status: 0 written, 2 usage error, 4 input that cannot be read or output that cannot
    be written.
    """
    from pathlib import Path

    from ..errors import CIError

    if store_path is not None and results_path is not None:
        raise click.UsageError("--store and --results exclude each other")
    if results_path is not None and (since or until or computers):
        raise click.UsageError("--since, --until and --computer select events of a store")
    if results_path is not None:
        source = Path(results_path)
    else:
        from ..events.paths import default_store_path

        source = Path(store_path) if store_path else default_store_path()
    from ..htmlreport import write_report

    try:
        summary = write_report(
            source,
            output,
            since=since,
            until=until,
            computers=computers,
            kind="results" if results_path is not None else "store",
        )
    except CIError as exc:
        click.echo(f"codeintegrity: {exc.diagnostics()}", err=True)
        sys.exit(exit_codes.CONFIG)
    size = Path(output).stat().st_size
    counted = "files" if summary.valid_known else "files with events"
    click.echo(
        f"wrote {output} ({size / 1024:,.0f} KiB): {summary.files:,} {counted}, "
        f"{summary.not_valid:,} not valid, {summary.event_count:,} events",
        err=True,
    )
