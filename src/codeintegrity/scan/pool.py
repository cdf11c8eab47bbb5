"""Judge files in worker processes; the parent walks, owns the results cache and gets the
outcomes back as they finish (or in input order with ``ordered``).

Each worker has its own pipe and at most ``PER_WORKER`` files in hand, so in-flight work is
bounded and a worker that dies (a segfault in a C library, an OOM kill) costs exactly the files
it held: each becomes a :class:`~.outcome.Crashed` outcome and a fresh worker takes its place.
Workers ignore SIGINT (Ctrl-C reaches the whole process group): the parent decides, stops them
and reports what was judged. A worker whose parent disappears sees its pipe close and exits.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import replace
from multiprocessing.connection import Connection, wait
from typing import TYPE_CHECKING, cast

from .outcome import Crashed, Judged, Outcome
from .run import Judge, ScanCounter
from .walk import Target, Unreadable, WalkItem

if TYPE_CHECKING:
    from multiprocessing.context import ForkProcess

    from ..results_cache import Pending

PER_WORKER = 2  # files handed to one worker at a time: one being judged, one waiting


def _worker_main(conn: Connection, judge: Judge) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return  # the parent is gone
        if task is None:
            return
        seq, target = task
        outcome = judge.unjudged(target)
        try:
            conn.send((seq, outcome))
        except (BrokenPipeError, OSError):
            return


class _Worker:
    def __init__(self, ctx: multiprocessing.context.ForkContext, judge: Judge) -> None:
        parent, child = ctx.Pipe()
        self.conn = parent
        self.process: ForkProcess = ctx.Process(
            target=_worker_main, args=(child, judge), daemon=True, name="codeintegrity-worker"
        )
        self.process.start()
        child.close()
        self.held: dict[int, Target] = {}

    def stop(self) -> None:
        # A worker still holding files is not waited for: their results are not wanted.
        if self.held:
            self.process.kill()
        else:
            try:
                self.conn.send(None)
            except OSError:
                pass
            self.process.join(2)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


def parallel_scan(
    items: Iterable[WalkItem],
    judge: Judge,
    jobs: int,
    *,
    ordered: bool = False,
    counter: ScanCounter | None = None,
) -> Iterator[Outcome]:
    """Like :func:`~.run.scan`, with ``jobs`` worker processes. The cache (``judge.cache``)
    and the policy are used here, in the parent; workers only verify."""
    ctx = multiprocessing.get_context("fork")
    # Import the engine (and its crypto libraries) once, here: forked workers share it instead
    # of each importing it again.
    from .. import verify as _engine  # noqa: F401

    # Workers must not inherit the parent's cache connection: they get a judge without it.
    worker_judge = judge.for_worker()
    workers = [_Worker(ctx, worker_judge) for _ in range(max(1, jobs))]
    feed = _Feeder(items, window=8 * len(workers) * PER_WORKER)
    exhausted = False
    seq = 0
    next_out = 0  # ordered: the next sequence number to yield
    done: dict[int, Outcome | None] = {}  # ordered: finished, waiting for their turn
    pending: dict[int, Pending | None] = {}
    retry: deque[tuple[int, Target]] = deque()  # files a dead worker held but had not begun
    window = 4 * len(workers) * PER_WORKER  # ordered: bound on the reorder buffer
    try:
        while True:
            # Hand out work while a worker has room (and, ordered, the buffer is bounded).
            while not exhausted or retry:
                free = [w for w in workers if len(w.held) < PER_WORKER]
                if not free or (ordered and not retry and seq - next_out >= window):
                    break
                if retry:
                    mine, item = retry.popleft()
                    miss = pending.get(mine)
                else:
                    taken = feed.take()
                    if taken is None:
                        break  # nothing walked yet: wait for the walk or a worker
                    if taken is _END:
                        exhausted = True
                        break
                    walked = cast(WalkItem, taken)
                    if counter is not None:
                        counter.seen += 1
                    mine = seq
                    seq += 1
                    if not isinstance(walked, Target):
                        done[mine] = walked
                        continue
                    item = walked
                    cached, miss = (None, None)
                    if judge.cache is not None:
                        cached, miss = judge.cache.lookup(item.path, judge.options)
                    if cached is not None:
                        done[mine] = Judged(judge.decide(cached), 0.0, item.size)
                        continue
                pending[mine] = miss
                worker = min(free, key=lambda w: len(w.held))
                worker.held[mine] = item
                # A cache miss is judged from the resolved path it stat'ed (what it stores).
                task = item if miss is None else Target(miss.real, item.in_tree, item.size)
                worker.conn.send((mine, task))
            # What may go out now: everything finished, or (ordered) the run from next_out.
            keys = list(done) if not ordered else []
            if ordered:
                while next_out + len(keys) in done:
                    keys.append(next_out + len(keys))
                next_out += len(keys)
            for key in keys:
                outcome = done.pop(key)
                if outcome is None:
                    if counter is not None:
                        counter.not_pe += 1
                    continue
                yield outcome
            if exhausted and not retry and not any(w.held for w in workers):
                break
            waiting_for: list[object] = [w.conn for w in workers]
            waiting_for += [w.process.sentinel for w in workers]
            if not exhausted and any(len(w.held) < PER_WORKER for w in workers):
                waiting_for.append(feed.wake)
            ready = wait(waiting_for)  # type: ignore[arg-type]
            if feed.wake in ready:
                feed.drained()
            for index, worker in enumerate(workers):
                if worker.conn in ready:
                    try:
                        while worker.conn.poll():
                            got, outcome = worker.conn.recv()
                            target = worker.held.pop(got)
                            done[got] = _finish(judge, outcome, pending.pop(got, None), target)
                    except (EOFError, OSError):
                        pass
                if worker.process.sentinel in ready or not worker.process.is_alive():
                    if worker.process.is_alive():
                        continue
                    worker.process.join()
                    reason = _death(worker.process.exitcode)
                    # A worker judges its files in the order given: the first one killed it;
                    # the others were waiting and go to another worker.
                    held = sorted(worker.held.items())
                    if held:
                        got, target = held[0]
                        pending.pop(got, None)
                        done[got] = Crashed(target.path, f"worker process {reason}")
                        retry.extend(held[1:])
                    worker.held.clear()
                    worker.conn.close()
                    workers[index] = _Worker(ctx, worker_judge)
    finally:
        for worker in workers:
            worker.stop()
        feed.close()


_END = object()


class _Feeder:
    """Runs the walk in a thread, so the parent can hand out work, collect results and write
    output while the walk (or a --files-from pipe) is still producing. Bounded queue."""

    def __init__(self, items: Iterable[WalkItem], window: int) -> None:
        self._queue: queue.Queue[object] = queue.Queue(maxsize=window)
        self.wake, self._wake_w = os.pipe()
        os.set_blocking(self.wake, False)
        self._thread = threading.Thread(
            target=self._run, args=(items,), name="codeintegrity-walk", daemon=True
        )
        self._thread.start()

    def _run(self, items: Iterable[WalkItem]) -> None:
        try:
            for item in items:
                self._queue.put(item)
                self._signal()
        finally:
            self._queue.put(_END)
            self._signal()

    def _signal(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass  # the reader has wake-ups pending already
        except OSError:
            pass

    def take(self) -> object | None:
        try:
            return self._queue.get_nowait()
        except queue.Empty:
            return None

    def drained(self) -> None:
        try:
            while os.read(self.wake, 4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def close(self) -> None:
        if self._thread.is_alive():
            return  # still blocked in the walk (a --files-from pipe): it may still signal
        for fd in (self.wake, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass


def _finish(
    judge: Judge, outcome: Outcome | None, miss: Pending | None, target: Target
) -> Outcome | None:
    """The parent's part: store a fresh report in the cache, then apply the policy."""
    if isinstance(outcome, Judged):
        report = replace(outcome.report, path=target.path)
        if miss is not None and judge.cache is not None:
            judge.cache.store_result(miss, report)
        return Judged(judge.decide(report), outcome.seconds, target.size)
    if isinstance(outcome, Unreadable | Crashed):
        return replace(outcome, path=target.path)
    return outcome


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"died ({name}) while judging this file"
    return f"exited ({exitcode}) while judging this file"


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
