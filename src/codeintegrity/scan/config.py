"""Everything a scan needs before the first file: options, policy, catalogs, event sinks.

Each function raises a :class:`~codeintegrity.errors.CIError` (one line) for an argument that
does not load; the CLI turns that into exit 4 before anything is verified. Warnings that do not
stop the run go to the ``warn`` callback.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..catalog.index import CatalogIndex
    from ..events.pipeline import EventPipeline
    from ..options import PageHashRequirement, VerifyOptions
    from ..policy.model import Policy
    from ..results_cache import ResultsCache

Warn = Callable[[str], None]


@dataclass(frozen=True)
class Settings:
    """The verdict-relevant inputs of a run, as given on the command line."""

    trust_files: tuple[str, ...] = ()
    no_default_trust: bool = False
    at: datetime | None = None
    require_page_hashes: PageHashRequirement = "off"
    cert_padding_check: bool = False
    policy_file: str | None = None
    catalogs: tuple[str, ...] = ()
    hash_algorithms: tuple[str, ...] = ()
    flat_algorithms: tuple[str, ...] = ()


def build_options(settings: Settings, warn: Warn) -> tuple[VerifyOptions, Policy | None]:
    """Options and policy for a run. Raises CIError (trust, policy or catalog that does not
    load)."""
    from ..authenticode.trust import TrustStore
    from ..options import VerifyOptions

    store = TrustStore.empty() if settings.no_default_trust else TrustStore.default()
    if settings.trust_files:
        store = store | TrustStore.from_paths(list(settings.trust_files))
    options = VerifyOptions(
        trust=store,
        at=settings.at,
        require_page_hashes=settings.require_page_hashes,
        cert_padding_check=settings.cert_padding_check,
    )
    policy: Policy | None = None
    if settings.policy_file is not None:
        from ..policy.evaluate import apply_to_options
        from ..policy.load import load_policy

        policy = load_policy(settings.policy_file)
        options = apply_to_options(policy, options)
    if settings.catalogs:
        options = replace(options, catalogs=open_catalogs(settings.catalogs, options, warn))
    return replace(
        options,
        extra_digests=options.extra_digests | frozenset(settings.hash_algorithms),
        flat_digests=options.flat_digests | frozenset(settings.flat_algorithms),
    ), policy


def open_catalogs(paths: Sequence[str], options: VerifyOptions, warn: Warn) -> CatalogIndex:
    """The catalog index. A named catalog that is missing, unreadable or does not parse is a
    ConfigError: a run that silently lost a catalog would report files it vouches for as
    unsigned. Bad .cat files found inside a named directory (a CatRoot holds odd files) are
    warnings."""
    from ..catalog.index import CatalogIndex

    named_files: list[str] = []
    for path in paths:
        try:
            st = Path(path).stat()
        except OSError as exc:
            raise ConfigError(f"{path}: catalog does not load: {exc.strerror or exc}") from None
        if stat.S_ISDIR(st.st_mode):
            continue
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{path}: catalog does not load: not a regular file")
        try:
            with Path(path).open("rb") as handle:
                handle.read(1)
        except OSError as exc:
            raise ConfigError(f"{path}: catalog does not load: {exc.strerror or exc}") from None
        named_files.append(os.path.realpath(path))
    index = CatalogIndex.open(list(paths), limits=options.limits)
    for warning in index.warnings:
        # The index names catalogs by their resolved path.
        if any(warning.startswith(f"{named}: ") for named in named_files):
            index.close()
            raise ConfigError(warning.replace("catalog skipped", "catalog does not load", 1))
    for warning in index.warnings:
        warn(warning)
    return index


@dataclass
class Events:
    """The run's event pipeline, and whether the default store had to be left out."""

    pipeline: EventPipeline | None
    store_unavailable: str | None = None  # why the default store is not recording


def open_events(uris: Sequence[str], *, store: bool, store_path: str | None, warn: Warn) -> Events:
    """Open the sinks. A sink named on the command line (``--events``, ``--store``) that does
    not open raises SinkError; the default store that cannot be opened (a read-only home) is a
    warning and the run goes on without it."""
    if not uris and not store:
        return Events(None)
    from ..events.pipeline import open_pipeline

    # A sink named on the command line that does not open raises SinkError; the pipeline itself
    # runs on without the *default* store when that cannot be opened, and says why.
    pipeline = open_pipeline(list(uris), store=store, store_path=store_path)
    reason = pipeline.store_unavailable
    if reason is None:
        return Events(pipeline)
    warn(f"events are not recorded in the default store: {reason}")
    return Events(pipeline, store_unavailable=reason)


def selftest(pipeline: EventPipeline | None) -> list[str]:
    """The known-answer tests before the first verification of this process (event 5056);
    returns what failed ([] when they pass)."""
    from ..events.selftest import run_selftest, selftest_event

    result = run_selftest()
    if pipeline is not None:
        pipeline.emit(selftest_event(result))
    return [] if result.ok else list(result.details) or ["self-test failed"]


def passes_selftest(pipeline: EventPipeline | None, say: Warn, refusal: str) -> bool:
    """Run :func:`selftest`; when it fails, say each failure and then ``refusal`` (what is not
    done because of it), close the pipeline and return False."""
    failed = selftest(pipeline)
    if not failed:
        return True
    for detail in failed:
        say(f"self-test: {detail}")
    if pipeline is not None:
        pipeline.close()
    say(f"cryptographic self-test failed; {refusal}")
    return False


def page_hash_requirement(every: bool, named: str | None) -> PageHashRequirement:
    """--require-page-hashes (``every``) and --require-page-hashes-for (``named``) as one."""
    if every or named == "all":
        return "all"
    return "drivers" if named == "drivers" else "off"


def open_cache(options: VerifyOptions, path: str | None, warn: Warn) -> ResultsCache | None:
    """The results cache, unless these options are never cached (catalogs, revocation)."""
    from ..results_cache import ResultsCache
    from ..verdict_keys import options_fingerprint

    if options_fingerprint(options) is None:
        return None
    return ResultsCache.open(path, warn=warn)


def default_jobs(paths: Sequence[str], listing: bool) -> int:
    """Worker processes when --jobs is not given: the usable cores for directories, a list
    (--files-from) or more than two files; one (this process) otherwise."""
    many = listing or len(paths) > 2 or any(Path(p).is_dir() for p in paths)
    if not many:
        return 1
    from .pool import usable_cores

    return usable_cores()
