"""`codeintegrity selftest`: the cryptographic known-answer tests, recorded as event 5056."""

from __future__ import annotations

import json
import sys

import click

from . import exit_codes


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--no-store", is_flag=True, help="Do not record the 5056 event in the store.")
@click.option(
    "--store",
    "store_path",
    type=click.Path(dir_okay=False, path_type=str),
    help="Record the event in this SQLite store instead of the default one.",
)
@click.option(
    "--events",
    "event_uris",
    multiple=True,
    metavar="URI",
    help="Also send the 5056 event to this sink (see `verify --help`); repeatable.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
def selftest(
    no_store: bool, store_path: str | None, event_uris: tuple[str, ...], as_json: bool
) -> None:
    """Run the known-answer tests of every hash and signature primitive the engine uses
    (MD5, SHA-1, SHA-256, SHA-384, SHA-512, RSA PKCS#1 v1.5, ECDSA P-256/P-384).

    Exit status: 0 passed, 5 a test failed (verification would refuse to run), 4 the event
    could not be recorded.
    """
    from ..errors import SinkError
    from ..events.pipeline import open_pipeline
    from ..events.selftest import run_selftest, selftest_event

    try:
        pipeline = (
            open_pipeline(list(event_uris), store=not no_store, store_path=store_path)
            if event_uris or not no_store
            else None
        )
    except SinkError as exc:
        click.echo(f"codeintegrity: {exc.diagnostics()}", err=True)
        sys.exit(exit_codes.CONFIG)
    result = run_selftest()
    if as_json:
        record = {
            "ok": result.ok,
            "return_code": result.return_code,
            "module": result.module,
            "details": result.details,
            "milliseconds": round(result.seconds * 1000, 3),
        }
        click.echo(json.dumps(record))
    else:
        for line in result.details:
            click.echo(line)
        verdict = "passed" if result.ok else "FAILED"
        click.echo(
            f"self-test {verdict}: return code {result.return_code:#x}, "
            f"{result.seconds * 1000:.1f} ms, {result.module}"
        )
    code = exit_codes.OK if result.ok else exit_codes.SELFTEST_FAILED
    if pipeline is not None:
        pipeline.emit(selftest_event(result, host=pipeline.host))
        summary = pipeline.close()
        if not summary.complete:
            for line in summary.lines():
                click.echo(line, err=True)
            if result.ok:
                code = exit_codes.CONFIG
    sys.exit(code)
