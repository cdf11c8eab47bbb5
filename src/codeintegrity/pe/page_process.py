"""Page-hash digests shared with a helper process, for large files.

A thread cannot hash 4 KiB pages faster than ~2.9 us each (hashlib's per-call cost on top of
2.3 us of SHA-256), and two threads of one process trade the GIL on every page (measured 1.2x
slower than one). A child interpreter has its own GIL: it hashes the page groups from the first
up while the parent, once its image stream is done, hashes them from the last down. They meet
where the work balances, whatever the machine's speed or the child's start-up time.

Protocol (no shared state but one scratch file): the parent writes every job's entry offsets
and bounds to an unlinked scratch file and starts ``python -I -S page_process.py FD SCRATCH
JOB...`` with the mapped file's descriptor. For each group, in order, the child writes the
digests to the scratch file and then one byte to its stdout. The parent reads those bytes
without blocking: ``done`` groups are on file. It stops when its next group is one the child
has finished, kills the child and reads the digests. A child that fails, stalls or never
starts only delivers fewer groups; the parent hashes the rest itself, so results never depend
on the child. Two processes may hash the same group once; the digests are the same bytes.

This module runs as a script with ``-I -S``: at module level it imports the standard library
only, and it must not import codeintegrity.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import sys
from array import array

# The child starts faster without typing, dataclasses and collections.abc (~25 ms of imports).
TYPE_CHECKING = False
if TYPE_CHECKING:
    import subprocess
    from collections.abc import Callable, Sequence
    from typing import BinaryIO

GROUP = 256  # entries per group: 1 MiB of 4 KiB pages, ~0.75 ms of hashing
ALGORITHMS = frozenset({"md5", "sha1", "sha256", "sha384", "sha512"})
_ZEROS = bytes(8192)  # the largest page size


class PageJob:
    """Table entries for the child: page ``i`` is H(file[off:off+span] || zeros(page-span))
    with span = clamp(min(bound, end) - off, 0, page). Entries must hold no excluded header
    field (the parent keeps those)."""

    __slots__ = ("algorithm", "page", "end", "offsets", "bounds")

    def __init__(
        self, algorithm: str, page: int, end: int, offsets: Sequence[int], bounds: Sequence[int]
    ) -> None:
        self.algorithm = algorithm
        self.page = page
        self.end = end  # the image hash end: no page reads past it
        self.offsets = offsets
        self.bounds = bounds  # each entry's next-entry offset (the table end for the last)

    @property
    def digest_size(self) -> int:
        return int(hashlib.new(self.algorithm).digest_size)


Group = tuple[int, int, int]  # (job index, first entry, end entry)


def groups(jobs: Sequence[PageJob]) -> list[Group]:
    """The work units, in the child's order (job by job, entries ascending)."""
    return [
        (index, i, min(i + GROUP, len(job.offsets)))
        for index, job in enumerate(jobs)
        for i in range(0, len(job.offsets), GROUP)
    ]


def page_digests(view: memoryview, job: PageJob, i: int, j: int) -> bytes:
    """The packed digests of entries [i, j) of ``job``, read from ``view`` (the whole file)."""
    ctor = getattr(hashlib, job.algorithm)
    page, end = job.page, job.end
    offsets, bounds = job.offsets[i:j], job.bounds[i:j]
    out = []
    for off, bound in zip(offsets, bounds, strict=True):
        span = max(0, min(page, bound - off, end - off))
        if span == page:
            out.append(ctor(view[off : off + page]).digest())
        else:
            h = ctor(view[off : off + span])
            h.update(_ZEROS[: page - span])
            out.append(h.digest())
    return b"".join(out)


# --- parent side ---------------------------------------------------------------------------


class PageProcess:
    """One running helper; use as a context manager so the child never outlives the call."""

    def __init__(
        self, proc: subprocess.Popen[bytes], scratch: BinaryIO, jobs: Sequence[PageJob]
    ) -> None:
        self._proc = proc
        self._scratch = scratch
        self._jobs = jobs
        self._groups = groups(jobs)
        self._positions = _positions(jobs)
        self._done = 0
        assert proc.stdout is not None
        self._progress = proc.stdout.fileno()
        os.set_blocking(self._progress, False)

    @classmethod
    def start(cls, fd: int, jobs: Sequence[PageJob]) -> PageProcess | None:
        """Spawn the child on the open file ``fd``; None where that is not possible (no
        interpreter on disk, no POSIX fd passing, no scratch file)."""
        import subprocess
        import tempfile
        from pathlib import Path  # not at module level: it would slow the child's start-up

        script = Path(__file__).resolve()
        if (
            os.name != "posix"
            or not sys.executable
            or getattr(sys, "frozen", False)
            or not script.is_file()
            or not all(job.algorithm in ALGORITHMS for job in jobs)
        ):
            return None
        scratch: BinaryIO | None = None
        try:
            scratch = tempfile.TemporaryFile()
            args = []
            for job, pos in zip(jobs, _positions(jobs), strict=True):
                table = array("Q", job.offsets).tobytes() + array("Q", job.bounds).tobytes()
                os.pwrite(scratch.fileno(), table, pos)
                args.append(f"{job.algorithm},{job.page},{job.end},{len(job.offsets)},{pos}")
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", script, str(fd), str(scratch.fileno()), *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                pass_fds=(fd, scratch.fileno()),
            )
        except (OSError, ValueError, OverflowError):
            # OverflowError: an offset past 2**64 cannot come from a parsed table; be safe.
            if scratch is not None:
                scratch.close()
            return None
        return cls(proc, scratch, jobs)

    def __enter__(self) -> PageProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the child, drop the pipe and the scratch file."""
        self._stop()
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self._scratch.close()

    def _stop(self) -> None:
        """Kill the child if it still runs and reap it."""
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()

    def _delivered(self) -> int:
        """Groups the child has finished (their digests are on file)."""
        while True:
            try:
                got = os.read(self._progress, 65536)
            except BlockingIOError:
                return self._done
            if not got:  # the child exited
                return self._done
            self._done = min(self._done + len(got), len(self._groups))

    def share(
        self,
        hash_group: Callable[[int, int, int], None],
        store: Callable[[int, int, int, bytes], None],
    ) -> None:
        """Hash groups from the last down with ``hash_group(job, i, j)`` until meeting the
        child, then hand the child's digests to ``store(job, i, j, digests)``."""
        low = len(self._groups)
        while low > self._delivered():
            low -= 1
            hash_group(*self._groups[low])
        self._stop()  # every group below ``low`` is on file: the child's work is done
        digests = [self._digests(index) for index in range(len(self._jobs))]
        for job_index, i, j in self._groups[:low]:
            size = self._jobs[job_index].digest_size
            packed = digests[job_index]
            if packed is None:  # unreadable scratch file: hash the group here instead
                hash_group(job_index, i, j)
            else:
                store(job_index, i, j, packed[i * size : j * size])

    def _digests(self, index: int) -> bytes | None:
        """Job ``index``'s packed digests as the child wrote them; None if unreadable."""
        job = self._jobs[index]
        size = job.digest_size * len(job.offsets)
        pos = self._positions[index] + 16 * len(job.offsets)
        try:
            packed = os.pread(self._scratch.fileno(), size, pos)
        except OSError:
            return None
        return packed if len(packed) == size else None


def _positions(jobs: Sequence[PageJob]) -> list[int]:
    """Where each job's offsets start in the scratch file; bounds and digests follow them."""
    positions, pos = [], 0
    for job in jobs:
        positions.append(pos)
        pos += (16 + job.digest_size) * len(job.offsets)
    return positions


# --- child side ----------------------------------------------------------------------------


def _read_job(spec: str, scratch: int) -> tuple[PageJob, int]:
    algorithm, page, end, count, pos = spec.split(",")
    n, at = int(count), int(pos)
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unsupported digest algorithm {algorithm!r}")
    offsets, bounds = array("Q"), array("Q")
    offsets.frombytes(os.pread(scratch, 8 * n, at))
    bounds.frombytes(os.pread(scratch, 8 * n, at + 8 * n))
    if len(offsets) != n or len(bounds) != n:
        raise ValueError("short scratch file")
    return PageJob(algorithm, int(page), int(end), offsets, bounds), at + 16 * n


def child_main(argv: Sequence[str]) -> int:
    """Hash every group in order; after each, its digests go to the scratch file and one
    byte to stdout. Stops when the parent goes away (its pipe breaks) or kills it."""
    fd, scratch = int(argv[0]), int(argv[1])
    read = [_read_job(spec, scratch) for spec in argv[2:]]
    jobs = [job for job, _ in read]
    with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as mapped:
        view = memoryview(mapped)
        try:
            for job_index, i, j in groups(jobs):
                job, out = read[job_index]
                os.pwrite(scratch, page_digests(view, job, i, j), out + i * job.digest_size)
                # Keep the child's resident set flat: drop the pages this group touched.
                lo = job.offsets[i] // mmap.PAGESIZE * mmap.PAGESIZE
                hi = min(len(mapped), max(job.offsets[j - 1] + job.page, lo))
                if hi > lo and hasattr(mapped, "madvise"):
                    mapped.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
                os.write(1, b".")
        finally:
            view.release()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(child_main(sys.argv[1:]))
    except (OSError, ValueError):  # BrokenPipeError included: the parent has gone
        sys.exit(1)
