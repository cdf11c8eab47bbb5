"""Work in worker processes; the parent feeds them, keeps every shared resource (the results
cache, the policy, the output) and gets the results back as they finish (or in input order
with ``ordered``).

:func:`run_pool` is the one pool: a :class:`Plan` says, in the parent, what each input becomes
(a result at once, or a task for a worker and what the parent keeps to finish it); the worker
callable runs in the worker processes. :func:`parallel_scan` is the plan for ``verify``;
``image --jobs`` has its own (:func:`codeintegrity.image.scan.in_workers`).

Each worker has its own pipe and at most ``HELD`` tasks in hand, so in-flight work is bounded;
tasks go out in batches (up to ``BATCH`` of them, ``BATCH_BYTES`` of files) so that a tree of
small files costs one pipe write per batch, not per file, and results come back one by one, so
a worker that dies (a segfault in a C library, an OOM kill) costs exactly the task it was on:
that one becomes :meth:`Plan.crashed`, the others go to a fresh worker. Workers
ignore SIGINT (Ctrl-C reaches the whole process group): the parent decides, stops them and
reports what was done. A worker whose parent disappears sees its pipe close and exits.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.reduction import ForkingPickler
from typing import TYPE_CHECKING, Generic, TypeAlias, TypeVar

from .feeder import END, Feeder
from .outcome import Crashed, Outcome
from .run import Judge, NotPE, ScanCounter, internal_message
from .share import NewsLog, NewsPipe, Share, learn_quietly, take_quietly, validated_chains
from .walk import Target, WalkItem

if TYPE_CHECKING:
    from multiprocessing.context import ForkProcess

    from ..results_cache import Pending

BATCH = 16  # tasks sent to a worker in one message, at most
BATCH_BYTES = 2 << 20  # ... and at most this much file (a batch of big files is one file)
HELD = 2 * BATCH  # tasks one worker holds at a time: a batch being worked on, one waiting
_RECHECK_SECONDS = 1.0  # the parent looks at the queue and the workers at least this often

ItemT = TypeVar("ItemT")
TaskT = TypeVar("TaskT")
StateT = TypeVar("StateT")
ResultT = TypeVar("ResultT")
OutT = TypeVar("OutT")


@dataclass(frozen=True, slots=True)
class Ready(Generic[OutT]):
    """An input the parent settles itself (a cached result, a path the walk skipped)."""

    value: OutT


@dataclass(frozen=True, slots=True)
class Send(Generic[TaskT, StateT]):
    """An input for a worker: the task it gets, and what the parent keeps to finish it."""

    task: TaskT
    state: StateT


class Plan(Generic[ItemT, TaskT, StateT, ResultT, OutT]):
    """The parent's side of a pool run."""

    def prepare(self, item: ItemT) -> Ready[OutT] | Send[TaskT, StateT]:
        raise NotImplementedError

    def finish(self, result: ResultT, state: StateT) -> OutT:
        raise NotImplementedError

    def crashed(self, state: StateT, message: str) -> OutT:
        """The result for a task whose worker died on it, or whose worker raised."""
        raise NotImplementedError


class Release(Generic[OutT]):
    """Results by sequence number, let out as they finish or (``ordered``) in input order."""

    def __init__(self, ordered: bool) -> None:
        self.ordered = ordered
        self.done: dict[int, OutT] = {}
        self.next_out = 0  # ordered: the next sequence number to let out

    def put(self, seq: int, value: OutT) -> None:
        self.done[seq] = value

    def take(self) -> list[OutT]:
        """Everything finished, or (ordered) the run from ``next_out``."""
        if not self.ordered:
            out = list(self.done.values())
            self.done.clear()
            return out
        keys: list[int] = []
        while self.next_out + len(keys) in self.done:
            keys.append(self.next_out + len(keys))
        self.next_out += len(keys)
        return [self.done.pop(key) for key in keys]


@dataclass(frozen=True, slots=True)
class _Raised:
    """A worker callable that raised: the message travels back instead of the result."""

    message: str


def _worker_main(
    conn: Connection,
    work: Callable[[object], object],
    share: Share | None,
    news: NewsPipe | None,
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if share is not None and news is not None:
        news.in_worker()
        share.start()
    while True:
        try:
            batch = conn.recv()
        except (EOFError, OSError):
            return  # the parent is gone
        if batch is None:
            return
        for seq, item in batch:
            if share is not None and news is not None:
                try:
                    heard = news.receive()
                except Exception:  # noqa: BLE001 - a garbled message: news only saves work
                    heard = []
                learn_quietly(share, heard)
            try:
                result = work(item)
            except Exception as exc:  # noqa: BLE001 - one task, never the worker
                result = _Raised(internal_message(exc))
            told = take_quietly(share) if share is not None else []
            try:
                payload = _pickled((seq, result, told))
            except Exception as exc:  # noqa: BLE001 - a result that does not pickle: a bug
                payload = _pickled((seq, _Raised(internal_message(exc)), []))
            try:
                # One result at a time: the parent knows which task a dying worker was on.
                conn.send_bytes(payload)
            except (BrokenPipeError, OSError):
                return


def _weight(task: object) -> int:
    """How much file a task names (a walk's Target has its size), for batching."""
    size = getattr(task, "size", 0)
    return size if isinstance(size, int) and size > 0 else 0


def _picklable(
    batch: list[tuple[int, object]], crashed: Callable[[int, str], None]
) -> list[tuple[int, object]]:
    """The tasks of ``batch`` that pickle; the others are reported through ``crashed``."""
    kept = []
    for seq, task in batch:
        try:
            _pickled(task)
        except Exception as exc:  # noqa: BLE001 - a bug, reported for that task only
            crashed(seq, internal_message(exc))
        else:
            kept.append((seq, task))
    return kept


def _pickled(message: object) -> bytes:
    """What ``Connection.send`` would write; pickled first, so a value that does not pickle
    is reported instead of breaking the pipe."""
    return bytes(ForkingPickler.dumps(message))


class _Worker:
    def __init__(
        self,
        ctx: multiprocessing.context.ForkContext,
        work: Callable[[object], object],
        share: Share | None = None,
    ) -> None:
        parent, child = ctx.Pipe()
        self.conn = parent
        self.news = NewsPipe() if share is not None else None
        self.process: ForkProcess = ctx.Process(
            target=_worker_main,
            args=(child, work, share, self.news),
            daemon=True,
            name="codeintegrity-worker",
        )
        self.process.start()
        child.close()
        if self.news is not None:
            self.news.in_parent()
        self.held: dict[int, object] = {}  # sequence number -> task, in the order sent
        self.weight = 0  # bytes of file the held tasks name

    def has_room(self) -> bool:
        """Room for another batch: what it holds is at most one batch (one waiting)."""
        return len(self.held) <= HELD - BATCH and self.weight <= BATCH_BYTES

    def take(self, batch: list[tuple[int, object]]) -> None:
        for seq, task in batch:
            self.held[seq] = task
            self.weight += _weight(task)

    def done(self, seq: int) -> None:
        self.weight -= _weight(self.held.pop(seq))

    def stop(self) -> None:
        # A worker still holding tasks is not waited for: their results are not wanted.
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
        if self.news is not None:
            self.news.close()


def run_pool(
    items: Iterable[ItemT],
    plan: Plan[ItemT, TaskT, StateT, ResultT, OutT],
    work: Callable[[TaskT], ResultT],
    jobs: int,
    *,
    ordered: bool = False,
    share: Share | None = None,
) -> Generator[OutT, None, None]:
    """One result per input, with ``jobs`` forked worker processes running ``work`` (which
    should not raise: what it raises becomes :meth:`Plan.crashed` for that task). The inputs
    are taken in a thread, so a slow source (a walk, a pipe) does not hold up the results.
    With ``share``, what one worker reports after a task reaches the others
    (:mod:`.share`)."""
    ctx = multiprocessing.get_context("fork")
    worker_work: Callable[[object], object] = work  # type: ignore[assignment]
    workers = [_Worker(ctx, worker_work, share) for _ in range(max(1, jobs))]
    told = NewsLog()
    feed = Feeder(items, window=4 * len(workers) * HELD)
    release: Release[OutT] = Release(ordered)
    exhausted = False
    seq = 0
    states: dict[int, StateT] = {}
    retry: deque[tuple[int, object]] = deque()  # tasks a dead worker held but had not begun
    window = 4 * len(workers) * HELD  # ordered: bound on the reorder buffer
    try:
        while True:
            # Hand out batches while a worker has room for one (and, ordered, the reorder
            # buffer is bounded).
            while True:
                roomy = [w for w in workers if w.has_room()]
                if not roomy or len(release.done) >= window:
                    break  # (results settled here, cache hits, are let out first)
                worker = min(roomy, key=lambda w: len(w.held))
                batch: list[tuple[int, object]] = []
                weight = 0
                while len(batch) < BATCH and weight < BATCH_BYTES and (not exhausted or retry):
                    if not retry and (
                        seq - release.next_out >= window if ordered else len(release.done) >= window
                    ):
                        break
                    if retry:
                        mine, task = retry.popleft()
                    else:
                        taken = feed.take()
                        if taken is None:
                            break  # nothing taken yet: wait for the source or a worker
                        if taken is END:
                            exhausted = True
                            break
                        mine = seq
                        seq += 1
                        planned = plan.prepare(taken)  # type: ignore[arg-type]
                        if isinstance(planned, Ready):
                            release.put(mine, planned.value)
                            continue
                        states[mine] = planned.state
                        task = planned.task
                    batch.append((mine, task))
                    weight += _weight(task)
                try:
                    payload = _pickled(batch)
                except Exception:  # noqa: BLE001 - a task that does not pickle: a bug
                    batch = _picklable(
                        batch, lambda got, why: release.put(got, plan.crashed(states.pop(got), why))
                    )
                    payload = _pickled(batch)
                if not batch:
                    break
                worker.take(batch)
                worker.conn.send_bytes(payload)
            yield from release.take()
            if exhausted and not retry and not any(w.held for w in workers):
                break
            waiting_for: list[object] = [w.conn for w in workers]
            waiting_for += [w.process.sentinel for w in workers]
            room = any(w.has_room() for w in workers)
            if not exhausted and room:
                waiting_for.append(feed.wake)
            blocked = ordered and seq - release.next_out >= window
            # Work is waiting that the hand-out left to let results out first: look again at
            # once (the bound is on what is not done: what was let out just now no longer counts;
            # a stale bound once left every worker idle with nothing to wake the wait). Otherwise
            # sleep until a worker or the source says something; the timeout is a safety net,
            # not the mechanism: a wake-up that never arrives costs a second, never a hang.
            again = room and (bool(retry) or (not blocked and not exhausted and feed.pending()))
            ready = wait(waiting_for, 0 if again else _RECHECK_SECONDS)  # type: ignore[arg-type]
            if feed.wake in ready:
                feed.drained()
            for index, worker in enumerate(workers):
                if worker.conn in ready:
                    try:
                        while worker.conn.poll():
                            got, result, news = worker.conn.recv()
                            if news:
                                _relay(news, worker, workers, told)
                            worker.done(got)
                            state = states.pop(got)
                            if isinstance(result, _Raised):
                                release.put(got, plan.crashed(state, result.message))
                            else:
                                release.put(got, plan.finish(result, state))
                    except (EOFError, OSError):
                        pass
                if worker.process.sentinel in ready or not worker.process.is_alive():
                    if worker.process.is_alive():
                        continue
                    worker.process.join()
                    reason = _death(worker.process.exitcode)
                    # A worker takes its tasks in the order given: the first one killed it;
                    # the others were waiting and go to another worker.
                    held = sorted(worker.held.items())
                    if held:
                        got = held[0][0]
                        release.put(got, plan.crashed(states.pop(got), f"worker process {reason}"))
                        retry.extend(held[1:])
                    worker.held.clear()
                    worker.conn.close()
                    if worker.news is not None:
                        worker.news.close()
                    fresh = workers[index] = _Worker(ctx, worker_work, share)
                    if fresh.news is not None:
                        fresh.news.post(told.items)
            for worker in workers:
                if worker.news is not None:
                    worker.news.flush()
    finally:
        for worker in workers:
            worker.stop()
        feed.close()


def _relay(news: list[object], teller: _Worker, workers: list[_Worker], told: NewsLog) -> None:
    """What ``teller`` reported, to every other worker (and to the log for later ones)."""
    told.add(news)
    for worker in workers:
        if worker is not teller and worker.news is not None:
            worker.news.post(news)


# The parent keeps, per file sent to a worker: the target as walked, and the cache miss.
_JudgeState: TypeAlias = "tuple[Target, Pending | None]"


class JudgePlan(Plan[WalkItem, Target, _JudgeState, Outcome | None, Outcome | None]):
    """verify's plan: the walk's items in, outcomes out. The results cache and the policy are
    used here, in the parent; workers (and Dask tasks) only verify. Outcomes None are files of
    a tree that are not PEs (see :func:`not_pe_dropped`)."""

    def __init__(
        self, judge: Judge, counter: ScanCounter | None = None, *, remote: bool = False
    ) -> None:
        self.judge = judge
        self.counter = counter
        self.remote = remote  # workers on other machines (a Dask cluster of its own)

    def prepare(self, item: WalkItem) -> Ready[Outcome | None] | Send[Target, _JudgeState]:
        if self.counter is not None:
            self.counter.seen += 1
        if not isinstance(item, Target):
            return Ready(item)
        cached, miss = self.judge.from_cache(item)
        if cached is not None:
            return Ready(None if isinstance(cached, NotPE) else cached)
        # A cache miss is judged from the resolved path it stat'ed (what it stores).
        task = item if miss is None else Target(miss.real, item.in_tree, item.size, item.linked)
        return Send(task, (item, miss))

    def finish(self, result: Outcome | None, state: _JudgeState) -> Outcome | None:
        target, miss = state
        return self.judge.finish(result, miss, target, remote=self.remote)

    def crashed(self, state: _JudgeState, message: str) -> Outcome | None:
        return Crashed(state[0].path, message)


def not_pe_dropped(
    outcomes: Iterable[Outcome | None], counter: ScanCounter | None
) -> Iterator[Outcome]:
    """The outcomes, without (but counting) the files of a tree that are not PEs."""
    for outcome in outcomes:
        if outcome is None:
            if counter is not None:
                counter.not_pe += 1
            continue
        yield outcome


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
    # Import the engine (and its crypto libraries) once, here: forked workers share it instead
    # of each importing it again.
    from .. import verify as _engine  # noqa: F401

    # Workers must not use the parent's cache connection: they get a judge without it.
    outcomes = run_pool(
        items,
        JudgePlan(judge, counter),
        judge.for_worker().unjudged,
        jobs,
        ordered=ordered,
        share=validated_chains(),
    )
    try:
        yield from not_pe_dropped(outcomes, counter)
    finally:
        outcomes.close()  # stops the workers now, not when the generator is collected


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
