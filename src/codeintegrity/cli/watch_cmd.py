"""`codeintegrity watch`: judge PE files in trees as they are written (inotify, no root)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from . import common_options as shared
from . import exit_codes

if TYPE_CHECKING:
    from ..report import Report


def _log(line: str) -> None:
    click.echo(f"codeintegrity watch: {line}", err=True)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument(
    "paths", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=str)
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per judged file.")
@click.option(
    "--debounce",
    type=click.FloatRange(min=0.0),
    default=1.0,
    show_default=True,
    help="Seconds a file must stay unchanged before it is judged.",
)
@click.option(
    "--mode",
    type=click.Choice(["audit", "enforce"]),
    default="audit",
    help="Which policy event a denial raises: 3076 (audit) or 3077 (enforce). Nothing is blocked.",
)
@shared.policy_option
@shared.trust_options()
@shared.catalog_option()
@shared.page_hash_option("off")
@shared.event_options()
def watch(
    paths: tuple[str, ...],
    as_json: bool,
    debounce: float,
    mode: str,
    policy_file: str | None,
    trust_files: tuple[str, ...],
    no_default_trust: bool,
    catalogs: tuple[str, ...],
    require_page_hashes: str,
    event_uris: tuple[str, ...],
    no_store: bool,
    store_path: str | None,
) -> None:
    """Watch directory trees and judge every PE file created, written or moved into them.

    Runs until SIGTERM/SIGINT; SIGHUP reloads trust, policy and catalogs. Exit status: 0
    stopped, 4 a trust/policy/catalog/sink argument that does not load, 69 inotify unusable.
    """
    from ..errors import CIError
    from ..guard.inotify import InotifyError
    from ..guard.rules import RulesConfig, build_rules
    from ..guard.watch import Watcher
    from .output import JsonWriter

    config = RulesConfig(
        mode=mode,  # type: ignore[arg-type]
        trust_files=trust_files,
        no_default_trust=no_default_trust,
        policy_file=policy_file,
        catalogs=catalogs,
        require_page_hashes=require_page_hashes,
    )
    pipeline = None
    try:
        rules = build_rules(config)
        if event_uris or not no_store:
            from ..events.pipeline import open_pipeline

            pipeline = open_pipeline(list(event_uris), store=not no_store, store_path=store_path)
    except (CIError, OSError) as exc:
        _log(exc.diagnostics() if isinstance(exc, CIError) else str(exc))
        sys.exit(exit_codes.CONFIG)
    writer = JsonWriter() if as_json else None

    def show(report: Report) -> None:
        if writer is not None:
            from ..scan.outcome import Judged

            writer.add(Judged(report))
            return
        line = f"{report.status}\t{report.path}"
        if report.event_ids:
            line += f"\tevents {','.join(map(str, report.event_ids))}"
        if report.decision is not None and not report.decision.allowed:
            line += f"\tdenied by policy {report.decision.policy_name!r}"
        click.echo(line)
        sys.stdout.flush()

    watcher = Watcher(paths, rules, config, pipeline, debounce=debounce, on_report=show, log=_log)
    try:
        watcher.start()
    except InotifyError as exc:
        _log(str(exc))
        sys.exit(exit_codes.UNAVAILABLE)
    try:
        watcher.run()
    finally:
        if pipeline is not None:
            summary = pipeline.close()
            if not summary.complete or summary.errors:
                for line in summary.lines():
                    _log(line)
        _log(f"stopped: {watcher.judged} judged, {watcher.failures} not valid")
    sys.exit(exit_codes.OK)
