"""`codeintegrity verify`: parse the options, run a scan (codeintegrity.scan), print outcomes.

Walking, judging, caching and policy live in :mod:`codeintegrity.scan`; this module only turns
the command line into settings, outcomes into output and the tally into an exit status.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Generator, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import click

from . import common_options as shared
from . import exit_codes
from .params import check_nt_paths, size

if TYPE_CHECKING:
    from ..events.pipeline import EventPipeline
    from ..htmlreport import ResultsCollector
    from ..options import VerifyOptions
    from ..scan.dask_backend import Session
    from ..scan.run import Judge
    from ..scan.walk import Selection
    from .output import Writer

DEMO_SAMPLE = Path(__file__).resolve().parent.parent / "data" / "demo_signed.dll"
_DIGESTS = click.Choice(["md5", "sha1", "sha256", "sha384", "sha512"])


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("paths", nargs=-1, type=str)
@click.option("--json", "as_json", is_flag=True, help="Print JSON Lines, one object per path.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV, one row per path (header first).")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing: the exit status says it all.")
@click.option(
    "--only-failures",
    is_flag=True,
    help="Show only files that are not valid or are denied, and paths that could not be read.",
)
@click.option(
    "--files-from",
    "files_from",
    metavar="FILE|-",
    help="Also judge the paths listed in FILE (- for stdin), one per line or NUL-separated "
    "(find -print0).",
)
@shared.trust_options()
@shared.at_option
@click.option(
    "--require-page-hashes",
    "require_all_page_hashes",
    is_flag=True,
    help="Same as --require-page-hashes-for all: a signature without page hashes raises 6281.",
)
@shared.page_hash_option()
@click.option(
    "--cert-padding-check",
    is_flag=True,
    help="Reject extra bytes inside the certificate table, as Windows does with "
    "EnableCertPaddingCheck=1 (CVE-2013-3900).",
)
@shared.policy_option
@shared.catalog_option()
@shared.event_options()
@click.option(
    "--events-best-effort",
    is_flag=True,
    help="Do not exit 6 when some events could not be delivered (they are still counted).",
)
@click.option(
    "--hash",
    "hash_algorithms",
    multiple=True,
    type=_DIGESTS,
    help="Also report (and show) the Authenticode hash with this algorithm (repeatable).",
)
@click.option(
    "--flat-hash",
    "flat_algorithms",
    multiple=True,
    type=_DIGESTS,
    help="Also report (and show) the hash of the whole file with this algorithm (repeatable).",
)
@click.option(
    "--no-cache",
    is_flag=True,
    help="Verify every file again instead of reusing results of unchanged files.",
)
@click.option(
    "--cache",
    "cache_path",
    metavar="FILE",
    help="Keep reusable results in this SQLite file instead of the default one.",
)
@click.option(
    "--include",
    "include",
    multiple=True,
    metavar="GLOB",
    help="In directories, judge only files whose path relative to the argument matches "
    "(repeatable).",
)
@click.option(
    "--exclude",
    "exclude",
    multiple=True,
    metavar="GLOB",
    help="In directories, skip files and directories whose relative path matches (repeatable).",
)
@click.option(
    "--max-size",
    callback=size,
    metavar="SIZE",
    help="Skip files larger than SIZE (bytes; K, M, G suffixes).",
)
@click.option(
    "--one-file-system", is_flag=True, help="Do not enter directories on other file systems."
)
@click.option(
    "--follow-dir-links",
    is_flag=True,
    help="Enter symlinked directories in trees (loops are detected and reported).",
)
@click.option(
    "-j",
    "--jobs",
    type=click.IntRange(min=1),
    help="Worker processes (default: the usable cores for directories, lists and more than two "
    "files; 1 otherwise). --jobs 1 judges in this process.",
)
@click.option(
    "--sorted",
    "ordered",
    is_flag=True,
    help="Print results in input order (default: as they finish).",
)
@click.option(
    "--dask",
    "dask_address",
    metavar="ADDRESS",
    help="Judge on a Dask cluster: a scheduler address (tcp://host:8786) whose workers see the "
    "same files, or local:N for a LocalCluster of N workers (needs the 'dask' extra).",
)
@click.option(
    "--path-map",
    "path_maps",
    multiple=True,
    metavar="CLIENT=WORKER",
    help="With --dask: the workers see files under CLIENT_PREFIX at WORKER_PREFIX (repeatable).",
)
@click.option(
    "--dask-wait",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="With --dask ADDRESS: how long to wait for a scheduler without workers to get one "
    "(default 60).",
)
@click.option(
    "--nt-path",
    "nt_paths",
    multiple=True,
    metavar=r"MOUNT=\Device\HarddiskVolumeN",
    callback=check_nt_paths,
    help="Name files under MOUNT in events by their Windows NT path, as Windows writes param1 "
    "(repeatable).",
)
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False, path_type=str),
    help="Also write an HTML report of this run (needs the 'report' extra).",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="A live progress line and an end summary on stderr (default: when stderr is a terminal).",
)
def verify(
    paths: tuple[str, ...],
    as_json: bool,
    as_csv: bool,
    quiet: bool,
    only_failures: bool,
    files_from: str | None,
    trust_files: tuple[str, ...],
    no_default_trust: bool,
    at: datetime | None,
    require_all_page_hashes: bool,
    require_page_hashes: str | None,
    cert_padding_check: bool,
    policy_file: str | None,
    catalogs: tuple[str, ...],
    event_uris: tuple[str, ...],
    events_best_effort: bool,
    hash_algorithms: tuple[str, ...],
    flat_algorithms: tuple[str, ...],
    no_store: bool,
    no_cache: bool,
    cache_path: str | None,
    store_path: str | None,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    max_size: int | None,
    one_file_system: bool,
    follow_dir_links: bool,
    jobs: int | None,
    ordered: bool,
    dask_address: str | None,
    path_maps: tuple[str, ...],
    dask_wait: float | None,
    progress: bool | None,
    report_path: str | None,
    nt_paths: tuple[str, ...],
) -> None:
    """Judge PE files (EXE, DLL, SYS, EFI) as Windows Code Integrity would.

    PATHS may be files or directories (walked for PE files; symlinks to files are judged,
    symlinked directories are reported and not entered). Without PATHS or --files-from the
    bundled demo sample, a small Microsoft-signed DLL, is verified.

    Exit status (the first that applies): 130 interrupted, 141 output pipe closed, 2 usage
    error, 4 a trust, policy, catalog, sink or --files-from argument that does not load, 5
    self-test failed, 70 an internal error on some file, 3 a path could not be read, 1 a file
    not valid or denied, 6 events could not all be delivered (not with --events-best-effort),
    0 otherwise. The other files are always judged.

    Results of unchanged files are reused from a cache (--no-cache: verify everything again);
    runs with --catalog or a policy that checks revocation are never cached.
    """
    from ..errors import CIError
    from ..scan.config import (
        Settings,
        build_options,
        default_jobs,
        open_cache,
        open_events,
        page_hash_requirement,
    )
    from ..scan.sources import inputs, open_listing

    if sum((as_json, as_csv, quiet)) > 1:
        raise click.UsageError("--json, --csv and --quiet exclude each other")
    if "-" in event_uris and (as_json or as_csv):
        raise click.UsageError("--events - and --json/--csv cannot share stdout")
    if require_all_page_hashes and require_page_hashes not in (None, "all"):
        raise click.UsageError(
            f"--require-page-hashes and --require-page-hashes-for {require_page_hashes} conflict"
        )
    if no_cache and cache_path is not None:
        raise click.UsageError("--no-cache and --cache exclude each other")
    if dask_address is not None and (catalogs or jobs is not None):
        raise click.UsageError("--dask excludes --catalog (a local index) and --jobs")
    if path_maps and dask_address is None:
        raise click.UsageError("--path-map is for --dask")
    if dask_wait is not None and dask_address is None:
        raise click.UsageError("--dask-wait is for --dask")
    if no_store and store_path is not None:
        raise click.UsageError("--no-store and --store exclude each other")
    if not paths and files_from is None:
        if not quiet:
            note = "(no path given: verifying the bundled demo sample"
            click.echo(f"{note} {DEMO_SAMPLE})", err=True)
        paths = (str(DEMO_SAMPLE),)

    def warn(message: str) -> None:
        if not quiet:
            click.echo(f"codeintegrity: warning: {message}", err=True)

    settings = Settings(
        trust_files=trust_files,
        no_default_trust=no_default_trust,
        at=at,
        require_page_hashes=page_hash_requirement(require_all_page_hashes, require_page_hashes),
        cert_padding_check=cert_padding_check,
        policy_file=policy_file,
        catalogs=catalogs,
        hash_algorithms=hash_algorithms,
        flat_algorithms=flat_algorithms,
    )
    listing: BinaryIO | None = None
    try:
        listing = open_listing(files_from)
        options, policy = build_options(settings, warn)
        events = open_events(event_uris, store=not no_store, store_path=store_path, warn=warn)
        if nt_paths and events.pipeline is not None:
            events.pipeline.host = events.pipeline.host.with_nt_paths(nt_paths)
    except CIError as exc:
        # Files named by options that do not load (anchors, policy, catalogs, sinks, lists).
        _fail(exc.diagnostics(), exit_codes.CONFIG)
    from ..scan.run import Judge
    from ..scan.walk import Selection

    collector = _report_collector(report_path, paths) if report_path is not None else None
    cache = None if no_cache else open_cache(options, cache_path, warn)
    judge = Judge(options, policy, cache)
    selection = Selection(
        include=include,
        exclude=exclude,
        max_size=max_size,
        one_file_system=one_file_system,
        follow_dir_links=follow_dir_links,
    )
    writer = _writer(as_json, as_csv, quiet, hash_algorithms, flat_algorithms)
    if jobs is None:
        jobs = default_jobs(paths, listing is not None)
    try:
        status = _run(
            inputs(paths, listing),
            judge,
            selection,
            writer,
            events.pipeline,
            quiet=quiet,
            only_failures=only_failures,
            verbose_events=bool(event_uris),
            events_best_effort=events_best_effort,
            store_unavailable=events.store_unavailable is not None,
            jobs=jobs,
            ordered=ordered,
            dask=_dask(dask_address, path_maps, dask_wait),
            progress=(sys.stderr.isatty() and not quiet) if progress is None else progress,
            collector=collector,
            count_paths=paths if files_from is None else (),
        )
        if collector is not None and report_path is not None:
            status = _write_report(collector, report_path, options, policy_file, status)
    finally:
        if cache is not None:
            cache.close()
    sys.exit(status)


def _report_collector(report_path: str, paths: tuple[str, ...]) -> ResultsCollector:
    """A collector for --report; the output's folder must exist before anything is judged."""
    from ..htmlreport import ResultsCollector

    folder = Path(report_path).resolve().parent
    if not folder.is_dir():
        _fail(f"--report {report_path}: folder {folder} does not exist", exit_codes.CONFIG)
    return ResultsCollector("codeintegrity verify " + " ".join(paths))


def _write_report(
    collector: ResultsCollector,
    report_path: str,
    options: VerifyOptions,
    policy_file: str | None,
    status: int,
) -> int:
    """Write the --report file; one line and exit 4 when that fails (the run's own status
    otherwise, so a report never hides a failing file)."""
    from ..errors import CIError
    from ..htmlreport import fingerprints_for, write_report

    try:
        write_report(collector, report_path, fingerprints=fingerprints_for(options, policy_file))
    except ImportError as exc:
        click.echo(f"codeintegrity: --report needs the 'report' extra ({exc.name})", err=True)
        return status or exit_codes.CONFIG
    except CIError as exc:
        click.echo(f"codeintegrity: {exc.diagnostics()}", err=True)
        return status or exit_codes.CONFIG
    return status


def _dask(
    address: str | None, path_maps: tuple[str, ...], wait: float | None
) -> tuple[Session, list[tuple[str, str]]] | None:
    if address is None:
        return None
    from ..scan.dask_backend import DaskUnavailable, connect, parse_path_map

    try:
        pairs = parse_path_map(path_maps)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--path-map") from None
    try:
        session = connect(address) if wait is None else connect(address, worker_wait=wait)
        return session, pairs
    except DaskUnavailable as exc:
        _fail(str(exc), exit_codes.CONFIG)
        raise AssertionError("unreachable") from None


def _writer(
    as_json: bool, as_csv: bool, quiet: bool, hashes: tuple[str, ...], flat: tuple[str, ...]
) -> Writer:
    from .output import CsvWriter, JsonWriter, QuietWriter, TableWriter

    if quiet:
        return QuietWriter()
    if as_json:
        return JsonWriter()
    if as_csv:
        return CsvWriter()
    return TableWriter(hashes=hashes, flat=flat)


def _say(message: str) -> None:
    click.echo(f"codeintegrity: {message}", err=True)


def _fail(message: str, code: int) -> None:
    click.echo(f"codeintegrity: {message}", err=True)
    sys.exit(code)


def _run(
    inputs: Iterator[str],
    judge: Judge,
    selection: Selection,
    writer: Writer,
    pipeline: EventPipeline | None,
    *,
    quiet: bool,
    only_failures: bool,
    verbose_events: bool,
    events_best_effort: bool,
    store_unavailable: bool,
    jobs: int,
    ordered: bool,
    dask: tuple[Session, list[tuple[str, str]]] | None = None,
    progress: bool = False,
    collector: ResultsCollector | None = None,
    count_paths: tuple[str, ...] = (),
) -> int:
    from ..scan.config import passes_selftest
    from ..scan.outcome import Judged
    from ..scan.run import ScanCounter, judged
    from ..scan.tally import Tally
    from ..scan.walk import walk

    if not passes_selftest(pipeline, _say, "nothing verified"):
        return exit_codes.SELFTEST_FAILED
    tally = Tally()
    counter = ScanCounter()
    interrupted = broken = False
    outcomes = judged(
        walk(inputs, selection),
        judge,
        jobs=jobs,
        ordered=ordered,
        counter=counter,
        dask=(dask[0].client, dask[1]) if dask is not None else None,
    )
    from .output import ProgressBar, is_failure, stderr_line

    bar = None
    if progress:
        from ..scan.run import BackgroundCount

        # The ETA needs the size of the tree: counted beside the scan (not for a list on stdin).
        bar = ProgressBar(BackgroundCount(count_paths, selection) if count_paths else None)
    try:
        for outcome in outcomes:
            tally.add(outcome)
            if bar is not None:
                bar.update(tally)
            if isinstance(outcome, Judged):
                if pipeline is not None and outcome.raises_events:
                    pipeline.emit_report(outcome.report)
                if collector is not None:
                    collector.add(outcome.report)
            line = stderr_line(outcome)
            if line is not None and not quiet:
                click.echo(line, err=True)
            if not only_failures or is_failure(outcome):
                writer.add(outcome)
        writer.close(tally)
    except KeyboardInterrupt:
        interrupted = True
    except BrokenPipeError:
        broken = True
        # Nothing more can be written there; keep Python's exit flush from complaining.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    finally:
        # Stops the workers now, not when the generator is collected (no orphans).
        if isinstance(outcomes, Generator):
            outcomes.close()
        if dask is not None:
            dask[0].close()
        if bar is not None:
            bar.close()
            for text in tally.detail_lines():
                click.echo(f"codeintegrity: {text}", err=True)
    lost = False
    if pipeline is not None:
        summary = pipeline.close()
        lost = not summary.complete
        # The default store is quiet; extra sinks, and any loss, get a summary on stderr.
        if verbose_events or lost or summary.errors:
            for text in summary.lines():
                click.echo(f"codeintegrity: {text}", err=True)
    if store_unavailable and not quiet:
        click.echo("codeintegrity: events were not recorded (default store unavailable)", err=True)
    if interrupted:
        click.echo(
            f"codeintegrity: interrupted after {tally.total} of {counter.inputs} files "
            f"({tally.summary_line()})",
            err=True,
        )
        return exit_codes.INTERRUPTED
    if broken:
        return exit_codes.BROKEN_PIPE
    return tally.exit_status(events_lost=lost and not events_best_effort)
