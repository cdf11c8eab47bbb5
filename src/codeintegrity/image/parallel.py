"""``--jobs N``: judge an image's files in N worker processes.

Each worker opens the image itself (dissect objects and file handles do not cross processes)
with the same options, catalogs and policies, and judges the tasks the parent plans; verdicts
come back in plan order, so output and events are the same as with one process. Folder-listing
errors are the parent's to report: it walks the volumes while planning.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..options import VerifyOptions
    from .scan import FileVerdict, ImageOptions, ImageScan, Task


@dataclass(frozen=True)
class WorkerConfig:
    """What a worker needs to open the image like the parent did (all picklable)."""

    path: str
    trust_files: tuple[str, ...]
    default_trust: bool
    at: datetime | None
    options: ImageOptions


_SCAN: ImageScan | None = None
_OPTIONS: ImageOptions | None = None


def verify_options(
    trust_files: tuple[str, ...], default_trust: bool, at: datetime | None
) -> VerifyOptions:
    from ..authenticode.trust import TrustStore
    from ..options import VerifyOptions

    store = TrustStore.default() if default_trust else TrustStore.empty()
    if trust_files:
        store = store | TrustStore.from_paths(list(trust_files))
    return VerifyOptions(trust=store, at=at)


def _start(config: WorkerConfig) -> None:
    global _SCAN, _OPTIONS  # noqa: PLW0603 - one scan per worker process, by design
    from .scan import open_image

    base = verify_options(config.trust_files, config.default_trust, config.at)
    _SCAN = open_image(config.path, base, config.options)
    _OPTIONS = config.options


def _judge(task: Task) -> FileVerdict | None:
    from .scan import judge

    assert _SCAN is not None and _OPTIONS is not None
    return judge(_SCAN, task, _OPTIONS)


class Workers:
    """A pool of worker processes for one image; use as a context manager."""

    def __init__(self, config: WorkerConfig, jobs: int) -> None:
        # spawn, not fork: the parent runs event-writer threads and holds SQLite handles.
        context = multiprocessing.get_context("spawn")
        self._pool = ProcessPoolExecutor(
            max_workers=jobs, mp_context=context, initializer=_start, initargs=(config,)
        )

    def __call__(self, tasks: Iterator[Task]) -> Iterator[FileVerdict | None]:
        return self._pool.map(_judge, tasks, chunksize=4)

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
