"""Judge what the walk yields, one file after another in this process.

:class:`Judge` turns a :class:`~.walk.Target` into an outcome (results cache, engine, policy);
:func:`scan` drives it over a walk and yields one outcome per path met, as each is ready.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .links import LinkedFiles
from .outcome import Crashed, Encoded, Judged, Outcome, encode_report
from .walk import (
    Opened,
    Selection,
    Skipped,
    Target,
    Unreadable,
    WalkItem,
    file_identity,
    record_opened,
    same_file,
)

if TYPE_CHECKING:
    from ..options import VerifyOptions
    from ..policy.model import Policy
    from ..report import Report
    from ..results_cache import Pending, ResultsCache


def starts_with_mz(path: str) -> bool:
    """Whether a file found in a tree looks like a PE. Raises OSError."""
    # O_NONBLOCK: a file replaced by a FIFO since the walk must not block the scan.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        return os.read(fd, 2) == b"MZ"
    finally:
        os.close(fd)


def internal_message(exc: BaseException) -> str:
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text[:300] + " (a bug: please report it with the file)"


class NotPE:
    """A results-cache hit for a file of a tree that turns out not to be a PE (see _reused)."""


NOT_PE = NotPE()


def _opened(seen: list[Opened], *, shared: bool) -> Opened | None:
    """What the engine opened (None: nothing, or a replaced engine that did not say). Only a
    PE may be shared with the file's other names: a file named directly is not sniffed."""
    if not seen:
        return None
    return seen[0] if shared else seen[0]._replace(names=1)


def _still(target: Target) -> bool:
    """Whether ``target``'s path still names the file the walk met (a name deeper than
    PATH_MAX, or one a link swapped meanwhile, is judged itself: it fails or differs alone)."""
    try:
        return file_identity(os.stat(target.path)) == target.linked  # noqa: PTH116 - str path
    except (OSError, ValueError):
        return False


class Judge:
    """Everything needed to judge one file; picklable without the cache (worker processes
    get ``cache=None``: the parent alone reads and writes the results cache)."""

    def __init__(
        self,
        options: VerifyOptions,
        policy: Policy | None = None,
        cache: ResultsCache | None = None,
    ) -> None:
        self.options = options
        self.policy = policy
        self.cache = cache
        # This run's verifications of files with more than one name (see :mod:`.links`).
        self.linked = LinkedFiles()

    def for_worker(self) -> Judge:
        """The same judge without cache and policy: a worker only verifies (the parent owns
        the cache and applies the policy)."""
        return type(self)(self.options)

    def __call__(self, target: Target) -> Outcome | None:
        """The outcome for ``target``; None for a file of a tree that is not a PE."""
        return self._judge(target, cached=True)

    def unjudged(self, target: Target) -> Outcome | None:
        """Verified only: no cache, no policy (a worker's part; the parent does the rest)."""
        return self._judge(target, cached=False)

    def _judge(self, target: Target, *, cached: bool) -> Outcome | None:
        started = time.perf_counter()
        opened: list[Opened] = []
        try:
            if cached:
                # Only PE files are kept or stored: a hit needs no sniffing (but see _reused).
                hit, miss = self.from_cache(target)
                if hit is not None:
                    return None if isinstance(hit, NotPE) else hit
            else:
                miss = None
            if target.in_tree and not starts_with_mz(target.path):
                return None
            # Looked up at call time: tests replace the engine's entry point.
            from .. import verify as engine

            # What the engine opened decides whether the cache and the file's other names may
            # keep the verification: the bytes judged, not what the path named before or after.
            if miss is not None:
                # Judge the resolved path: what is stored must be what was stat'ed.
                report = engine.verify_path(miss.real, self.options, opened=record_opened(opened))
                report = replace(report, path=target.path)
            else:
                report = engine.verify_path(target.path, self.options, opened=record_opened(opened))
        except OSError as exc:
            return Unreadable(target.path, exc.errno, exc.strerror or str(exc))
        except Exception as exc:  # noqa: BLE001 - one bad file must not end a long run
            return Crashed(target.path, internal_message(exc))
        seconds = time.perf_counter() - started
        read = _opened(opened, shared=target.in_tree or report.image is not None)
        if not cached:
            # A worker's result: encoded here, in parallel, so the parent only splices it.
            encoded = encode_report(report)
            return Judged(
                encoded=encoded, path=target.path, seconds=seconds, size=target.size, opened=read
            )
        stored = None
        if miss is not None and self.cache is not None:
            stored = self.cache.store_result(miss, report, opened=read)
        if read is not None and target.linked is not None:
            self._share(target, read, stored or encode_report(report))
        if stored is not None and self.policy is None:
            # Encoded once, for the cache and the output line alike.
            return Judged(encoded=stored, path=target.path, seconds=seconds, size=target.size)
        return Judged(self.decide(report), seconds, target.size)

    def from_cache(
        self, target: Target
    ) -> tuple[Judged | Unreadable | NotPE | None, Pending | None]:
        """The parent's part before a worker verifies ``target``: the outcome of another name
        of the same file judged earlier in this run, or its cached outcome (the policy applied);
        else the cache miss to store the worker's report under. A hit that turns out not to be
        a PE of the tree is :data:`NOT_PE`."""
        miss = None
        if self.cache is not None:
            cached, miss = self.cache.lookup_encoded(target.path, self.options)
            if cached is not None:
                return self._reused(cached, target), None
        met = target.linked
        if met is not None and met in self.linked and _still(target):
            earlier = self.linked.get(met, fixed_time=self.options.at is not None)
            if earlier is not None:
                if miss is not None and self.cache is not None:
                    # Stored for this name too (what was opened for the first name had this
                    # identity, and so has this path): the next run finds every name.
                    self.cache.store_encoded(miss, earlier, identity=met)
                return self._reused(earlier, target), None
        return None, miss

    def _reused(self, encoded: Encoded, target: Target) -> Judged | Unreadable | NotPE:
        """A verification not done in this call (cached, or another name's) for ``target``."""
        if encoded.status == "malformed" and target.in_tree:
            # Stored when the file was named directly, which is not sniffed: in a tree, a file
            # that does not start with "MZ" is not a PE and is not reported.
            try:
                if not starts_with_mz(target.path):
                    return NOT_PE
            except OSError as exc:  # gone or unreadable since the lookup: reported, not raised
                return Unreadable(target.path, exc.errno, exc.strerror or str(exc))
        if self.policy is None:
            return Judged(encoded=encoded, path=target.path, size=target.size)
        return Judged(self.decide(encoded.decode(target.path)), 0.0, target.size)

    def _share(
        self, target: Target, opened: Opened, encoded: Encoded, *, remote: bool = False
    ) -> None:
        """Keep ``encoded`` for the other names of ``target``'s file, if the file the engine
        opened is the one the walk met (not another, swapped in meanwhile)."""
        met = target.linked
        if met is None or not same_file(opened.identity, met, remote=remote):
            return
        # Another machine's clock is not this one's: there the window counts back from now.
        since = None if remote else opened.at_ns
        try:
            self.linked.keep(met, opened.names, encoded, since=since)
        except Exception:  # noqa: BLE001, S110 - a memo only saves work; it never fails a file
            pass

    def finish(
        self, outcome: Outcome | None, miss: Pending | None, target: Target, *, remote: bool = False
    ) -> Outcome | None:
        """The parent's part after a worker verified ``target``: store a fresh report in the
        cache, then apply the policy; outcomes name the path as the walk gave it. ``remote``:
        the worker runs on another machine (see :func:`~.walk.same_file`)."""
        if isinstance(outcome, Judged):
            encoded = outcome.encoded
            if encoded is None:  # a worker that sent the report itself
                encoded = encode_report(outcome.report)
            read = outcome.opened
            if miss is not None and self.cache is not None:
                self.cache.store_encoded(miss, encoded, opened=read, remote=remote)
            if read is not None:
                self._share(target, read, encoded, remote=remote)
            if self.policy is None:
                return Judged(
                    encoded=encoded, path=target.path, seconds=outcome.seconds, size=target.size
                )
            report = self.decide(encoded.decode(target.path))
            return Judged(report, outcome.seconds, target.size)
        if isinstance(outcome, Unreadable | Crashed):
            return replace(outcome, path=target.path)
        return outcome

    def decide(self, report: Report) -> Report:
        if self.policy is None:
            return report
        from ..policy.evaluate import evaluate

        return replace(report, decision=evaluate(report, self.policy))


def scan(
    items: Iterable[WalkItem], judge: Judge, progress: ScanCounter | None = None
) -> Iterator[Outcome]:
    """One outcome per path the walk met (files of a tree that are not PEs are left out)."""
    for item in items:
        if progress is not None:
            progress.seen += 1
        if isinstance(item, Target):
            outcome = judge(item)
            if outcome is None:
                if progress is not None:
                    progress.not_pe += 1
                continue
            yield outcome
        else:
            yield item


def judged(
    items: Iterable[WalkItem],
    judge: Judge,
    *,
    jobs: int = 1,
    ordered: bool = False,
    counter: ScanCounter | None = None,
    dask: tuple[Any, Sequence[tuple[str, str]]] | None = None,
) -> Iterator[Outcome]:
    """The outcomes of a run, from the backend its options name: a Dask cluster (a client and
    the path map), ``jobs`` worker processes, or this process."""
    if dask is not None:
        from .dask_backend import dask_scan

        client, path_map = dask
        return dask_scan(items, judge, client, ordered=ordered, counter=counter, path_map=path_map)
    if jobs > 1:
        from .pool import parallel_scan

        return parallel_scan(items, judge, jobs, ordered=ordered, counter=counter)
    return scan(items, judge, counter)


class ScanCounter:
    """How far the walk got: for "interrupted after N of M files"."""

    def __init__(self) -> None:
        self.seen = 0  # paths taken from the walk
        self.not_pe = 0  # files of a tree that are not PEs (not judged, not reported)

    @property
    def inputs(self) -> int:
        return self.seen - self.not_pe


__all__ = ["Judge", "ScanCounter", "Skipped", "Unreadable", "internal_message", "scan"]


class BackgroundCount:
    """Counts the PE files a walk will judge, in a daemon thread, so a progress display can
    show an ETA once the count is known (``total`` stays None until then)."""

    def __init__(self, paths: Iterable[str], selection: Selection | None = None) -> None:
        import threading

        self.total: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run,
            args=(list(paths), selection),
            name="codeintegrity-count",
            daemon=True,
        )
        self._thread.start()

    def _run(self, paths: list[str], selection: Selection | None) -> None:
        from .walk import walk

        count = 0
        for item in walk(paths, selection):
            if self._stop.is_set():
                return
            if isinstance(item, Target) and item.in_tree:
                try:
                    if not starts_with_mz(item.path):
                        continue
                except OSError:
                    pass
            count += 1
        self.total = count

    def stop(self) -> None:
        self._stop.set()
