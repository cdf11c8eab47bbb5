"""`codeintegrity image`: what would a Windows installation's own Code Integrity refuse to load?"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from . import common_options as shared
from . import exit_codes

if TYPE_CHECKING:
    from ..image.scan import FileVerdict


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("path", type=click.Path(path_type=str))
@click.option(
    "--json", "as_json", is_flag=True, help="JSON Lines: one object per file, then a summary."
)
@click.option("--all", "all_files", is_flag=True, help="Judge every PE on every volume.")
@click.option(
    "--policy",
    "policy_files",
    multiple=True,
    type=click.Path(path_type=str),
    help="A reference policy to check against: Microsoft's current driver blocklist (WDAC XML "
    "or binary), a LOLDrivers or our TOML policy (repeatable).",
)
@shared.catalog_option("More .cat files or folders, besides the image's own CatRoot (repeatable).")
@shared.trust_options()
@shared.at_option
@click.option("--device", metavar="NT-DEVICE",
              help="NT device of the system volume in events (default \\Device\\HarddiskVolumeN, "
              "N = its partition number).")  # fmt: skip
@click.option("--max-file-size", default=4096, show_default=True, metavar="MIB",
              # At most the engine's own bound (Limits.max_file_size, 4 GiB): a larger file
              # would pass here and come back malformed ("exceeds the limit"), not "not judged".
              type=click.IntRange(1, 4096),
              help="Files larger than this are reported as not judged (a bound on the time one "
              "file takes; memory does not grow with file size: files are read in "
              "chunks).")  # fmt: skip
@click.option("--jobs", "-j", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Judge files in this many worker processes (output order is kept).")  # fmt: skip
@shared.event_options()
def image(
    path: str,
    as_json: bool,
    all_files: bool,
    policy_files: tuple[str, ...],
    catalogs: tuple[str, ...],
    trust_files: tuple[str, ...],
    no_default_trust: bool,
    at: datetime | None,
    device: str | None,
    max_file_size: int,
    jobs: int,
    event_uris: tuple[str, ...],
    no_store: bool,
    store_path: str | None,
) -> None:
    """Judge a Windows disk image (E01, VMDK, VHD/VHDX, QCOW2, raw) or a mounted system volume
    as its own Code Integrity would: the drivers its SYSTEM hive starts, System32\\drivers and
    System32\\*.dll|exe (--all: every PE), with its CatRoot catalogs and its CI policies.

    Prints a table or JSON Lines per file, then the summary: drivers refused at next boot, files
    the reference policies (--policy) deny, tampered/unsigned files. Exit status: 0 nothing
    refused or not valid, 1 something is, 2 usage, 3 the image cannot be opened or a file cannot
    be read, 4 a trust, policy or sink argument that does not load, 5 self-test failed, 70 an
    internal error on some file.
    """
    from ..errors import CIError
    from ..image.limits import ImageLimits
    from ..image.scan import ImageOptions, in_workers, open_image, scan_image
    from ..image.source import ImageOpenError
    from ..scan.config import Settings, build_options, passes_selftest

    try:
        settings = Settings(trust_files=trust_files, no_default_trust=no_default_trust, at=at)
        options, _policy = build_options(settings, _warn)
        references = tuple(_load_policy(p) for p in policy_files)
    except CIError as exc:
        _fail(exc.diagnostics(), exit_codes.CONFIG)
    image_options = ImageOptions(
        all_files=all_files,
        limits=ImageLimits(max_file_size=max_file_size * 1024 * 1024),
        device=device,
        extra_catalogs=catalogs,
        reference_policies=references,
    )
    try:
        scan = open_image(path, options, image_options)
    except ImageOpenError as exc:
        _fail(exc.diagnostics(), exit_codes.UNREADABLE)
    except CIError as exc:
        _fail(exc.diagnostics(), exit_codes.CONFIG)
    try:
        try:
            pipeline = _open_events(event_uris, no_store, store_path, scan.computer_name)
        except CIError as exc:
            _fail(exc.diagnostics(), exit_codes.CONFIG)
        if not passes_selftest(pipeline, _say, "nothing verified"):
            sys.exit(exit_codes.SELFTEST_FAILED)
        writer = _Writer(as_json, pipeline)
        verdicts = in_workers(path, options, image_options, jobs) if jobs > 1 else None
        scan_image(scan, image_options, writer.add, verdicts)
    finally:
        scan.close()
    sys.exit(writer.finish(scan, bool(event_uris)))


class _Writer:
    def __init__(self, as_json: bool, pipeline: Any) -> None:
        from .output import TableWriter

        self.as_json = as_json
        self.table = None if as_json else TableWriter()
        self.pipeline = pipeline
        self.problems = 0
        self.internal = 0

    def add(self, verdict: FileVerdict) -> None:
        report = verdict.report
        if report is None:
            if verdict.problem and verdict.problem != "file missing":
                click.echo(f"codeintegrity: {verdict.windows_path}: {verdict.problem}", err=True)
                self.problems += 1
                self.internal += verdict.problem.startswith("internal error")
            return
        if self.table is not None:
            from ..scan.outcome import Judged

            self.table.add(Judged(report))
        else:
            line = report.to_dict()
            line["nt_path"] = verdict.nt_path
            line["services"] = [
                {"name": s.name, "start": s.start, "type": s.type} for s in verdict.services
            ]
            line["reference_decisions"] = {name: d.to_dict() for name, d in verdict.reference}
            sys.stdout.write(json.dumps(line, separators=(",", ":")) + "\n")
        if self.pipeline is not None:
            from ..events.build import events_for_report

            # Events name the file as Windows does, by its NT device path.
            events = events_for_report(
                replace(report, path=verdict.nt_path), host=self.pipeline.host
            )
            self.pipeline.emit_batch(events)

    def finish(self, scan: Any, extra_sinks: bool) -> int:
        from ..image.summary import summarize, summary_lines

        summary = summarize(scan)
        if self.table is not None:
            # The image's own summary replaces the table's one-line tally.
            for text in summary_lines(summary):
                click.echo(text)
        else:
            sys.stdout.write(json.dumps({"summary": summary}, separators=(",", ":")) + "\n")
        if self.pipeline is not None:
            result = self.pipeline.close()
            if extra_sinks or not result.complete or result.errors:
                for text in result.lines():
                    click.echo(f"codeintegrity: {text}", err=True)
        if self.internal:
            return exit_codes.INTERNAL
        if self.problems or any(v.errors for v in scan.source.volumes):
            return exit_codes.UNREADABLE
        bad = summary["refused_at_next_boot"] or summary["not_valid"]
        denied = any(
            v.report is not None
            and v.report.decision is not None
            and v.report.decision.enforced_denial
            for v in scan.files
        )
        return exit_codes.NOT_VALID if bad or denied else exit_codes.OK


def _load_policy(path: str) -> Any:
    from ..policy.sipolicy_bin import load_policy_any

    policy, name = load_policy_any(path)
    return name, policy


def _open_events(
    uris: tuple[str, ...], no_store: bool, store_path: str | None, computer: str | None
) -> Any:
    if not uris and no_store:
        return None
    from ..events.pipeline import open_pipeline

    # The events' Computer is the imaged machine, named by its own SYSTEM hive.
    return open_pipeline(list(uris), store=not no_store, store_path=store_path, computer=computer)


def _say(message: str) -> None:
    click.echo(f"codeintegrity: {message}", err=True)


def _warn(message: str) -> None:
    _say(f"warning: {message}")


def _fail(message: str, code: int) -> None:
    _say(message)
    sys.exit(code)
