"""`codeintegrity verify`: judge PE files and report every finding with its event."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from . import exit_codes
from .params import parse_iso_time

if TYPE_CHECKING:
    from ..options import VerifyOptions
    from ..report import Report
    from ..results_cache import ResultsCache

DEMO_SAMPLE = Path(__file__).resolve().parent.parent / "data" / "demo_signed.dll"


def _parse_time(_ctx: click.Context, _param: click.Parameter, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_iso_time(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 time") from None


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("paths", nargs=-1, type=click.Path(path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print JSON Lines, one object per file.")
@click.option(
    "--trust",
    "trust_files",
    multiple=True,
    type=click.Path(path_type=str),
    help="Add trust anchors from a PEM/DER file (repeatable).",
)
@click.option(
    "--no-default-trust",
    is_flag=True,
    help="Do not trust Microsoft's root program (the default anchors).",
)
@click.option(
    "--at",
    "at",
    callback=_parse_time,
    metavar="ISO-TIME",
    help="Judge certificate validity at this time when a file has no valid timestamp "
    "(default: now).",
)
@click.option(
    "--require-page-hashes",
    "require_page_hashes",
    flag_value="all",
    default=None,
    help="A signature without page hashes raises 6281 ('signed without page hashes').",
)
@click.option(
    "--require-page-hashes-for",
    "require_page_hashes",
    type=click.Choice(["off", "drivers", "all"]),
    help="Require page hashes for no file, kernel drivers and FORCE_INTEGRITY images, or all.",
)
@click.option(
    "--cert-padding-check",
    is_flag=True,
    help="Reject extra bytes inside the certificate table, as Windows does with "
    "EnableCertPaddingCheck=1 (CVE-2013-3900).",
)
@click.option(
    "--policy",
    "policy_file",
    type=click.Path(path_type=str),
    help="Apply a policy (TOML): mode, allowed signers, deny rules, revocation.",
)
@click.option(
    "--catalog",
    "catalogs",
    multiple=True,
    type=click.Path(path_type=str),
    help="A .cat file or a directory of them (e.g. a mounted CatRoot); repeatable.",
)
@click.option(
    "--events",
    "event_uris",
    multiple=True,
    metavar="URI",
    help="Also send events to jsonl:PATH, xml:PATH, sqlite:PATH, syslog+udp://HOST:PORT, "
    "syslog+tcp://HOST:PORT or - (stdout); repeatable.",
)
@click.option(
    "--hash",
    "hash_algorithms",
    multiple=True,
    type=click.Choice(["md5", "sha1", "sha256", "sha384", "sha512"]),
    help="Also report the Authenticode hash with this algorithm (sha256 always; repeatable).",
)
@click.option(
    "--flat-hash",
    "flat_algorithms",
    multiple=True,
    type=click.Choice(["md5", "sha1", "sha256", "sha384", "sha512"]),
    help="Also report the hash of the whole file with this algorithm (repeatable).",
)
@click.option("--no-store", is_flag=True, help="Do not record events in the default store.")
@click.option(
    "--no-cache",
    is_flag=True,
    help="Verify every file again instead of reusing results of unchanged files.",
)
@click.option(
    "--cache",
    "cache_path",
    type=click.Path(dir_okay=False, path_type=str),
    help="Keep reusable results in this SQLite file instead of the default one.",
)
@click.option(
    "--store",
    "store_path",
    type=click.Path(dir_okay=False, path_type=str),
    help="Record events in this SQLite store instead of the default one.",
)
def verify(
    paths: tuple[str, ...],
    as_json: bool,
    trust_files: tuple[str, ...],
    no_default_trust: bool,
    at: datetime | None,
    require_page_hashes: str | None,
    cert_padding_check: bool,
    policy_file: str | None,
    catalogs: tuple[str, ...],
    event_uris: tuple[str, ...],
    hash_algorithms: tuple[str, ...],
    flat_algorithms: tuple[str, ...],
    no_store: bool,
    store_path: str | None,
    no_cache: bool,
    cache_path: str | None,
) -> None:
    """Judge PE files (EXE, DLL, SYS, EFI) as Windows Code Integrity would.

    PATHS may be files or directories (walked for PE files). Without PATHS the bundled demo
    sample, a small Microsoft-signed DLL, is verified. Exit status: 0 every file valid, 1 any
    file not valid (with --policy: any denial in enforce mode), 2 usage error, 3 a path
    unreadable (the other files are still judged), 4 a trust, policy, catalog or sink argument
    that does not load, 5 self-test failed, 70 an internal error on some file (the others are
    still judged).

    Results of unchanged files are reused from a cache (--no-cache: verify everything again);
    runs with --catalog or a policy that checks revocation are never cached.
    """
    from ..errors import CIError

    if no_cache and cache_path is not None:
        raise click.UsageError("--no-cache and --cache exclude each other")
    if not paths:
        click.echo(f"(no path given: verifying the bundled demo sample {DEMO_SAMPLE})", err=True)
        paths = (str(DEMO_SAMPLE),)
    try:
        options, policy = _build_options(
            trust_files,
            no_default_trust,
            at,
            require_page_hashes or "off",
            cert_padding_check,
            policy_file,
            catalogs,
        )
        options = replace(
            options,
            extra_digests=options.extra_digests | frozenset(hash_algorithms),
            flat_digests=options.flat_digests | frozenset(flat_algorithms),
        )
        pipeline = _open_events(event_uris, no_store, store_path)
    except CIError as exc:
        # Files named by options that do not load (anchors, policy, catalogs, sinks).
        _fail(exc.diagnostics(), exit_codes.CONFIG)
    cache = None if no_cache else _open_cache(options, cache_path)
    try:
        status = _run(
            paths, options, policy, pipeline, as_json, extra_sinks=bool(event_uris), cache=cache
        )
    finally:
        if cache is not None:
            cache.close()
    sys.exit(status)


def _open_cache(options: VerifyOptions, path: str | None) -> ResultsCache | None:
    """The results cache, unless these options are never cached (catalogs, revocation)."""
    from ..results_cache import ResultsCache, options_fingerprint

    if options_fingerprint(options) is None:
        return None

    def warn(message: str) -> None:
        click.echo(f"codeintegrity: warning: {message}", err=True)

    return ResultsCache.open(path, warn=warn)


def _fail(message: str, code: int) -> None:
    click.echo(f"codeintegrity: {message}", err=True)
    sys.exit(code)


def _build_options(
    trust_files: tuple[str, ...],
    no_default_trust: bool,
    at: datetime | None,
    require_page_hashes: str,
    cert_padding_check: bool,
    policy_file: str | None,
    catalogs: tuple[str, ...],
) -> tuple[VerifyOptions, object | None]:
    from ..authenticode.trust import TrustStore
    from ..options import VerifyOptions

    store = TrustStore.empty() if no_default_trust else TrustStore.default()
    if trust_files:
        store = store | TrustStore.from_paths(list(trust_files))
    options = VerifyOptions(
        trust=store,
        at=at,
        require_page_hashes=require_page_hashes,  # type: ignore[arg-type]
        cert_padding_check=cert_padding_check,
    )
    policy = None
    if policy_file is not None:
        from ..policy.evaluate import apply_to_options
        from ..policy.load import load_policy

        policy = load_policy(policy_file)
        options = apply_to_options(policy, options)
    if catalogs:
        from ..catalog.index import CatalogIndex

        index = CatalogIndex.open(list(catalogs), limits=options.limits)
        for warning in index.warnings:
            click.echo(f"codeintegrity: warning: {warning}", err=True)
        options = replace(options, catalogs=index)
    return options, policy


def _open_events(uris: tuple[str, ...], no_store: bool, store_path: str | None) -> object | None:
    if not uris and no_store:
        return None
    from ..events.pipeline import open_pipeline

    return open_pipeline(list(uris), store=not no_store, store_path=store_path)


def _iter_files(paths: tuple[str, ...]) -> Iterator[tuple[str, OSError | None]]:
    """Yield each file to judge; directories are walked for files that start with 'MZ'."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for child in sorted(p for p in path.rglob("*") if p.is_file()):
                try:
                    with child.open("rb") as handle:
                        if handle.read(2) != b"MZ":
                            continue
                except OSError as exc:
                    yield str(child), exc
                    continue
                yield str(child), None
        elif path.exists() and not path.is_file():
            # FIFOs and devices would block or never end: only regular files are judged.
            yield raw, OSError(0, "not a regular file")
        else:
            yield raw, None


def _run(
    paths: tuple[str, ...],
    options: VerifyOptions,
    policy: object | None,
    pipeline: object | None,
    as_json: bool,
    *,
    extra_sinks: bool,
    cache: ResultsCache | None = None,
) -> int:
    from ..verify import verify_path
    from .output import JsonWriter, TableWriter

    code = _selftest(pipeline)
    if code:
        return code
    writer = JsonWriter() if as_json else TableWriter()
    unreadable = not_valid = internal = 0
    for name, error in _iter_files(paths):
        if error is None:
            try:
                if cache is not None:
                    report = cache.verify(name, options)
                else:
                    report = verify_path(name, options)
            except OSError as exc:
                error = exc
            except Exception as exc:  # noqa: BLE001 - one bad file must not end a long run
                click.echo(f"codeintegrity: internal error on {name}: {_line(exc)}", err=True)
                internal += 1
                continue
        if error is not None:
            reason = error.strerror or str(error)
            click.echo(f"codeintegrity: cannot read {name}: {reason}", err=True)
            unreadable += 1
            continue
        if policy is not None:
            report = _decide(report, policy)
        if _counts_as_failure(report, policy):
            not_valid += 1
        writer.add(report)
        if pipeline is not None:
            pipeline.emit_report(report)  # type: ignore[attr-defined]
    writer.close()
    if pipeline is not None:
        summary = pipeline.close()  # type: ignore[attr-defined]
        # The default store is quiet; extra sinks, and any loss, get a summary on stderr.
        if extra_sinks or not summary.complete or summary.errors:
            for line in summary.lines():
                click.echo(f"codeintegrity: {line}", err=True)
    if internal:
        return exit_codes.INTERNAL
    if unreadable:
        return exit_codes.UNREADABLE
    return exit_codes.NOT_VALID if not_valid else exit_codes.OK


def _line(exc: BaseException) -> str:
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text[:300] + " (a bug: please report it with the file)"


def _decide(report: Report, policy: object) -> Report:
    from ..policy.evaluate import evaluate

    return replace(report, decision=evaluate(report, policy))  # type: ignore[arg-type]


def _counts_as_failure(report: Report, policy: object | None) -> bool:
    if report.decision is not None:
        return report.decision.enforced_denial
    return not report.ok


def _selftest(pipeline: object | None) -> int:
    """Known-answer tests before the first verification of this process (event 5056)."""
    from ..events.selftest import run_selftest, selftest_event

    result = run_selftest()
    if pipeline is not None:
        pipeline.emit(selftest_event(result))  # type: ignore[attr-defined]
    if not result.ok:
        for detail in result.details:
            click.echo(f"codeintegrity: self-test: {detail}", err=True)
        if pipeline is not None:
            pipeline.close()  # type: ignore[attr-defined]
        click.echo("codeintegrity: cryptographic self-test failed; nothing verified", err=True)
        return exit_codes.SELFTEST_FAILED
    return 0
