"""One hashing pass over a file's chunks, its feeds split between the caller's thread and a
helper thread (see :mod:`.hashing` for why and how the feeds are split)."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # concurrent.futures loads only when a file is big enough for threads
    from concurrent.futures import Future, ThreadPoolExecutor

    from .chunks import Part, Streamed, Whole
    from .hashing import Release, _Feed, _PageFeed, _RangeFeed

PARALLEL_MIN_SIZE = 1 << 20  # below this, thread hand-offs cost more than they save
# Worker threads next to the caller's: one per spare core, at most two. On 2 cores a third
# thread was measured slower (SHA-1 + SHA-256 + page hashes: 2.0x one pass -> 2.2x).
WORKERS = max(1, min(2, (os.cpu_count() or 2) - 1))

_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _forget_executor() -> None:
    """In a forked child: the parent's pool threads do not exist here, and a task handed to
    the inherited pool would wait for them forever (a worker forked after its parent hashed a
    large file hung on its first one). The child starts its own pool on first need."""
    global _executor, _executor_lock
    _executor, _executor_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_executor)


def _worker() -> ThreadPoolExecutor:
    """One process-wide pool: threads are started once, not per file."""
    global _executor
    from concurrent.futures import ThreadPoolExecutor

    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="ci-hash")
        return _executor


def _feed_bin(feeds: Sequence[_Feed], parts: Sequence[Part]) -> None:
    for view, base, lo, hi in parts:
        for feed in feeds:
            feed.feed(view, base, lo, hi)


def _bins(streams: list[_RangeFeed], pages: list[_PageFeed], count: int) -> list[list[_Feed]]:
    """Split the feeds into at most ``count`` bins of similar cost (largest first).

    Every page feed goes to bin 0, the caller's thread: page digests are one hashlib call per
    4 KiB, so a page thread holds the GIL often, and two of them trade it on every page
    (measured on 2 cores: 51,230 pages on two threads took 1.2x the time of one).
    """
    bins: list[list[_Feed]] = [[] for _ in range(max(1, count))]
    loads = [0.0] * len(bins)
    bins[0].extend(pages)
    loads[0] = sum(p.cost for p in pages)
    for feed in sorted(streams, key=lambda f: f.cost, reverse=True):
        k = loads.index(min(loads))
        bins[k].append(feed)
        loads[k] += feed.cost
    return [bins[0], *(b for b in bins[1:] if b)]


def _feed_started(feeds: Sequence[_Feed], parts: Sequence[Part], started: threading.Lock) -> None:
    started.release()
    _feed_bin(feeds, parts)


def _start(
    pool: ThreadPoolExecutor, bins: Sequence[Sequence[_Feed]], parts: Sequence[Part]
) -> list[Future[None]]:
    """Hand each worker its bin for ``parts`` and wait until it runs.

    A thread hashing pages drops the GIL for every page and takes it straight back, so a
    worker woken now would lose the race for the GIL until the caller blocks. Waiting here
    (GIL released) lets the worker get into its stream update first.
    """
    futures = []
    for feeds in bins:
        started = threading.Lock()
        started.acquire()
        futures.append(pool.submit(_feed_started, feeds, parts, started))
        started.acquire()
    return futures


def _release(release: Release | None, start: int, upto: int, chunk: int, size: int) -> int:
    """Hand every whole chunk in [start, upto) to ``release``; returns where it stopped."""
    while start < upto:
        if release is not None:
            release(start, min(chunk, size - start))
        start += chunk
    return start


def run_pass(
    chunks: Whole | Streamed,
    streams: list[_RangeFeed],
    pages: list[_PageFeed],
    chunk: int,
    release: Release | None,
) -> None:
    """Walk the chunks; the workers run one chunk ahead of the caller's thread.

    Being ahead, a worker's stream update (hashlib releases the GIL for it) is the first to
    touch a chunk, so it takes the page faults of a mapped file and the caller's page digests
    find the chunk resident. The caller waits for the workers only at chunk boundaries.
    """
    size = chunks.size
    bins = _bins(streams, pages, 1 + WORKERS if size >= PARALLEL_MIN_SIZE else 1)
    mine, theirs = bins[0], bins[1:]
    pool = _worker() if theirs else None
    ahead: list[Future[None]] = []
    handed = 0  # the workers have been given [0, handed)
    done = 0 if pool is not None else size  # and have finished [0, done)
    released = 0
    for lo in range(0, size, chunk):
        hi = min(lo + chunk, size)
        if ahead:
            for future in ahead:
                future.result()
            done, ahead = handed, []
        chunks.drop_before(lo)
        if pool is not None and handed < size:
            end = min(hi + chunk, size)
            ahead = _start(pool, theirs, chunks.parts(handed, end))
            handed = end
        _feed_bin(mine, chunks.parts(lo, hi))
        released = _release(release, released, min(hi, done), chunk, size)
    for future in ahead:
        future.result()
    chunks.drop_before(size)
    _release(release, released, size, chunk, size)
    # Table entries at or past EOF and out-of-order tables (hand-made only) start in no chunk.
    for feed in pages:
        feed.finish(chunks.window)
