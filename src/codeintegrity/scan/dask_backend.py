"""Judge files on a Dask cluster (the ``distributed`` scheduler); the client walks, owns the
results cache, the output and the events, exactly as with local worker processes.

Workers read the files themselves, from storage they share with the client (NFS or SMB mounts,
the same image files); ``path_map`` rewrites a client path prefix to the prefix the workers see.
Paths go out in batches sized by :class:`BatchSizer` (small first, then about a quarter of a
second of work each), with a bounded number of batches in flight; results are gathered as they
complete. When a worker is lost the scheduler runs its tasks again elsewhere; each task's
result is read once, so a file is never reported twice.

The verification options travel once per run (a task whose result the workers share) as a
recipe (the trust anchors' DER, the other option values) and are rebuilt once per worker
process: a trust store holds locks and caches that do not pickle. A worker keeps the judges
it built, so a cluster that stays up keeps its certificate caches warm from one run to the
next. Catalogs (a local SQLite index) do not travel: ``--catalog`` is refused with Dask.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from .feeder import END, Feeder
from .outcome import Crashed, Outcome
from .pool import JudgePlan, Ready, Release, not_pe_dropped
from .run import Judge, ScanCounter, internal_message
from .share import MAX_RELAYED, learn_quietly, take_quietly, validated_chains
from .walk import Target, WalkItem

if TYPE_CHECKING:
    from ..options import VerifyOptions
    from ..results_cache import Pending

FEED_QUEUE = 1024  # walk items taken ahead of the batches
IN_FLIGHT_PER_THREAD = 2  # batches per worker thread: one being judged, one waiting for it
THREADS_RECHECK_SECONDS = 5.0  # how often the client asks how many worker threads there are
WORKER_JUDGES_KEPT = 4  # judges (one per option set) a long-lived worker keeps warm


class DaskUnavailable(Exception):
    """The `dask` extra is not installed, or the scheduler cannot be reached."""


@dataclass
class BatchSizer:
    """How many files go in the next task.

    The first tasks are small, so that every worker has work at once and the first results
    come back after a few files (a worker's first files are its slowest: its certificate
    caches are cold). Later ones hold about ``task_seconds`` of work, from the per-file cost
    the workers measured: long enough that the scheduler's own cost per task (a few
    milliseconds and a round trip) is noise, short enough that the last tasks of a run leave
    the other workers idle for at most that long. A size at most doubles from one task to the
    next, so one quick batch does not make the next one huge.
    """

    first: int = 2
    most: int = 256
    task_seconds: float = 0.25
    size: int = field(init=False)
    per_file: float | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.size = self.first

    def record(self, files: int, seconds: float) -> None:
        """A task of ``files`` files took ``seconds`` on its worker."""
        if files <= 0:
            return
        cost = max(seconds / files, 1e-5)
        # A moving average: caches warm up as a run goes on, so recent tasks count most.
        self.per_file = cost if self.per_file is None else (self.per_file + cost) / 2
        wanted = int(self.task_seconds / self.per_file)
        self.size = max(1, min(self.most, wanted, 2 * self.size))


@dataclass(frozen=True)
class JudgeRecipe:
    """What a worker needs to rebuild the judge: picklable, and small."""

    anchors: tuple[bytes, ...]
    trust_name: str
    options: VerifyOptions  # with trust=None; rebuilt with the anchors on the worker

    @classmethod
    def of(cls, judge: Judge) -> JudgeRecipe:
        options = judge.options
        if options.catalogs is not None:
            raise ValueError("--catalog cannot be used with --dask (the index is local)")
        trust = options.trust
        anchors: tuple[bytes, ...] = ()
        name = "default"
        if trust is not None:
            anchors = trust.ders
            name = trust.name
        return cls(anchors, name, replace(options, trust=None))

    def build(self) -> Judge:
        from ..authenticode.trust import TrustStore

        key = hash((self.anchors, self.trust_name, repr(self.options)))
        judge = _WORKER_JUDGES.get(key)
        if judge is None:
            trust = TrustStore(self.anchors, self.trust_name)
            judge = _WORKER_JUDGES[key] = Judge(replace(self.options, trust=trust))
            while len(_WORKER_JUDGES) > WORKER_JUDGES_KEPT:
                _WORKER_JUDGES.popitem(last=False)
        else:
            _WORKER_JUDGES.move_to_end(key)
        return judge


# One judge per worker process and recipe: chains and trust registries are built once.
_WORKER_JUDGES: OrderedDict[int, Judge] = OrderedDict()


def judge_batch(
    recipe: JudgeRecipe, batch: Sequence[tuple[int, Target]], news: Sequence[Any] = ()
) -> tuple[float, list[tuple[int, Outcome | None]], list[Any]]:
    """Runs on a Dask worker: verify each file of the batch (no cache, no policy). ``news``
    is chains other workers validated (:mod:`..authenticode.chaincache`). Returns the seconds
    it took (for :class:`BatchSizer`), one outcome per file, and the chains this worker
    validated meanwhile (for the others)."""
    started = time.perf_counter()
    judge = recipe.build()
    chains = validated_chains()
    chains.start()
    learn_quietly(chains, list(news))
    out: list[tuple[int, Outcome | None]] = []
    for seq, target in batch:
        try:
            out.append((seq, judge.unjudged(target)))
        except Exception as exc:  # noqa: BLE001 - one file, never the batch
            out.append((seq, Crashed(target.path, internal_message(exc))))
    return time.perf_counter() - started, out, take_quietly(chains)


def _same(recipe: JudgeRecipe) -> JudgeRecipe:
    return recipe


def parse_path_map(specs: Iterable[str]) -> list[tuple[str, str]]:
    """CLIENT_PREFIX=WORKER_PREFIX pairs, longest client prefix first. Raises ValueError."""
    pairs = []
    for spec in specs:
        client, sep, worker = spec.partition("=")
        if not sep or not client or not worker:
            raise ValueError(f"{spec!r} is not CLIENT_PREFIX=WORKER_PREFIX")
        pairs.append((client, worker))
    return sorted(pairs, key=lambda p: len(p[0]), reverse=True)


def _map(path: str, pairs: Sequence[tuple[str, str]]) -> str:
    for client, worker in pairs:
        if path == client or path.startswith(client.rstrip("/") + "/"):
            return worker + path[len(client) :]
    return path


@dataclass
class Session:
    """A client, and the LocalCluster it started with its Dask settings (closed together)."""

    client: Any
    cluster: Any = None
    settings: ExitStack | None = None  # Dask settings held while the LocalCluster runs

    def close(self) -> None:
        try:
            self.client.close()
            if self.cluster is not None:
                self.cluster.close()
        finally:
            if self.settings is not None:
                self.settings.close()


def connect(address: str, worker_wait: float = 60.0) -> Session:
    """A distributed Client: ``local:N`` starts a LocalCluster of N single-threaded worker
    processes (closed with the client); anything else is a scheduler address, which must have
    a worker, or get one within ``worker_wait`` seconds (tasks sent to a scheduler without
    workers wait for good)."""
    try:
        from distributed import Client
    except ImportError:
        raise DaskUnavailable(
            "--dask needs the 'dask' extra: pip install 'codeintegrity[dask]'"
        ) from None
    try:
        if address.startswith("local:"):
            try:
                workers = int(address.removeprefix("local:") or "0")
            except ValueError:
                workers = 0
            if workers < 1:
                raise DaskUnavailable(f"{address!r}: local:N needs a whole number N >= 1")
            settings = ExitStack()
            try:
                cluster = _local_cluster(workers, settings)
                return Session(Client(cluster), cluster, settings)
            except BaseException:
                settings.close()
                raise
        client = Client(address, timeout="10s")
    except (OSError, TimeoutError) as exc:
        raise DaskUnavailable(f"cannot reach the Dask scheduler {address}: {exc}") from None
    try:
        client.wait_for_workers(1, timeout=worker_wait)
    except (OSError, TimeoutError):
        client.close()
        raise DaskUnavailable(
            f"the Dask scheduler {address} has no worker (waited {worker_wait:g} s)"
        ) from None
    return Session(client)


# What the first verification imports (parsers, crypto bindings): imported before the
# LocalCluster forks its workers, so that none of them imports it again.
_ENGINE_MODULES = (
    "codeintegrity.verify",
    "codeintegrity.authenticode.signer",
    "codeintegrity.authenticode.signeddata",
    "codeintegrity.pe.certtable",
    "codeintegrity.pe.hashing",
    "codeintegrity.pe.layout",
    "codeintegrity.pe.pagehash",
    "codeintegrity.pe.versioninfo",
)


def _local_cluster(workers: int, settings: ExitStack) -> Any:
    """A LocalCluster of ``workers`` single-threaded worker processes, no dashboard; its Dask
    settings stay in force until ``settings`` is closed (a worker restarted after a crash is
    started the same way).

    Where the platform has it, the workers are forked from this process rather than spawned:
    a spawned worker starts a fresh interpreter and imports distributed and the engine again
    (about a second of CPU each, measured), a forked one has them already. Forking is safe
    here: this happens before the scan starts, while the only other thread is Dask's own event
    loop (the one that forks) and perhaps an event sink's writer. The workers only verify:
    they never touch what they inherit (the results cache, the event sinks) nor SQLite at all
    (catalogs are refused with Dask), whose locks a sink's thread may hold at the moment of
    a fork; they leave with ``os._exit`` (multiprocessing), which closes nothing.
    """
    import importlib
    import logging
    import multiprocessing

    import dask
    from distributed import LocalCluster

    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    if method == "fork":
        for name in _ENGINE_MODULES:
            importlib.import_module(name)
        _workers_ignore_ctrl_c(settings)
    config = {
        "distributed.worker.multiprocessing-method": method,
        # Timeouts well above the defaults: a loaded machine must not turn a slow worker
        # start or a late heartbeat into a failed run.
        "distributed.comm.timeouts.connect": "120s",
        "distributed.deploy.lost-worker-timeout": "120s",
        # Machinery a scan does not use, each costing CPU the workers need: the statistical
        # profiler samples the busy thread every 10 ms, work stealing rebalances tasks the
        # client already hands out a few at a time, the event loops' health tick runs every
        # 20 ms, the memory monitors poll every 100 ms (a worker's memory is bounded per file).
        "distributed.worker.profile.enabled": False,
        "distributed.scheduler.work-stealing": False,
        "distributed.admin.tick.interval": "500ms",
        "distributed.worker.memory.target": False,
        "distributed.worker.memory.spill": False,
        "distributed.worker.memory.pause": False,
        "distributed.worker.memory.terminate": False,
    }
    settings.enter_context(dask.config.set(config))
    return LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        # Not the default port 8787 (another cluster may hold it): a free local one.
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
        # Dask's own log lines (warnings about a slow event loop on a busy machine,
        # connection resets while the cluster closes) are not the user's business: the
        # scan reports what went wrong with each file.
        silence_logs=logging.CRITICAL,
    )


_FORKS_IGNORE_SIGINT = False  # while a LocalCluster of ours runs (see _workers_ignore_ctrl_c)
_AT_FORK_REGISTERED = False


def _workers_ignore_ctrl_c(settings: ExitStack) -> None:
    """Ctrl-C reaches the whole process group: the client stops the scan, reports and closes
    the cluster; a worker must not die of it on its own (with a KeyboardInterrupt traceback
    from its event loop). Processes forked while ``settings`` is open (the workers, and any a
    nanny restarts) start with SIGINT ignored, which asyncio then leaves alone."""
    global _FORKS_IGNORE_SIGINT, _AT_FORK_REGISTERED
    import os

    if not _AT_FORK_REGISTERED and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_child_ignores_sigint)
        _AT_FORK_REGISTERED = True
    _FORKS_IGNORE_SIGINT = True

    def done() -> None:
        global _FORKS_IGNORE_SIGINT
        _FORKS_IGNORE_SIGINT = False

    settings.callback(done)


def _child_ignores_sigint() -> None:
    if _FORKS_IGNORE_SIGINT:
        import signal

        signal.signal(signal.SIGINT, signal.SIG_IGN)


def dask_scan(
    items: Iterable[WalkItem],
    judge: Judge,
    client: Any,
    *,
    ordered: bool = False,
    counter: ScanCounter | None = None,
    path_map: Sequence[tuple[str, str]] = (),
    sizer: BatchSizer | None = None,
) -> Iterator[Outcome]:
    """Like :func:`~.pool.parallel_scan`, on the cluster behind ``client``: the same plan
    (cache and policy in the client), batches of tasks instead of worker processes."""
    # A client of a LocalCluster (local:N) has it as .cluster: its workers share this machine.
    # Any other cluster (a scheduler address, SSH, Kubernetes, a job queue) may not.
    from distributed import LocalCluster

    remote = not isinstance(getattr(client, "cluster", None), LocalCluster)
    plan = JudgePlan(judge, counter, remote=remote)
    run = _DaskRun(plan, client, path_map, sizer or BatchSizer())
    yield from not_pe_dropped(run.outcomes(items, judge, ordered), counter)


class _DaskRun:
    """One run's bookkeeping on the client: batches in flight and what each one carries."""

    def __init__(
        self,
        plan: JudgePlan,
        client: Any,
        path_map: Sequence[tuple[str, str]],
        sizer: BatchSizer,
    ) -> None:
        self.plan = plan
        self.client = client
        self.path_map = path_map
        self.sizer = sizer
        self.states: dict[int, tuple[Target, Pending | None]] = {}
        # future key -> the files it carries, and whether it runs alone (a suspect)
        self.batches: dict[Any, tuple[list[tuple[int, Target]], bool]] = {}
        self.suspects: deque[tuple[int, Target]] = deque()
        self.recipe: Any = None
        self.running: Any = None
        self.in_flight = 0
        self.threads = 1
        self.threads_checked = 0.0
        # Chains the workers validated, by the send after which they were heard: each travels
        # with the next ``threads`` batches, so that every worker is likely to get it.
        self.heard: deque[list[Any]] = deque()
        self.fresh: list[Any] = []

    def _window(self) -> int:
        """Batches to keep in flight; the cluster may grow or shrink during a run."""
        now = time.monotonic()
        if now - self.threads_checked >= THREADS_RECHECK_SECONDS:
            self.threads = max(1, sum(self.client.nthreads().values()))
            self.threads_checked = now
        return self.threads * IN_FLIGHT_PER_THREAD

    def outcomes(
        self, items: Iterable[WalkItem], judge: Judge, ordered: bool
    ) -> Iterator[Outcome | None]:
        from multiprocessing.connection import wait

        from distributed import as_completed

        # The recipe is a task's result, not scattered data: when every worker holding it is
        # lost, the scheduler computes it again instead of cancelling the batches needing it.
        self.recipe = self.client.submit(_same, JudgeRecipe.of(judge), pure=False)
        # Results travel with the completion notice (no second round trip per batch); an
        # error comes back as the exception, for that batch's files alone.
        self.running = as_completed(loop=self.client.loop, with_results=True, raise_errors=False)
        release: Release[Outcome | None] = Release(ordered)
        # The walk (or a --files-from pipe) runs in a thread: a batch goes out as soon as the
        # source has nothing more ready, instead of waiting for it to fill.
        feed = Feeder(items, window=FEED_QUEUE)
        exhausted = False
        seq = 0
        batch: list[tuple[int, Target]] = []
        try:
            while True:
                window = self._window()
                # Ordered: the reorder buffer holds at most what the window can hold.
                reorder_limit = window * self.sizer.most
                while not self.suspects and not exhausted and self.in_flight < window:
                    if ordered and seq - release.next_out >= reorder_limit:
                        break
                    item = feed.take()
                    if item is None:
                        break  # nothing ready: send what there is, then wait
                    if item is END:
                        exhausted = True
                        break
                    mine = seq
                    seq += 1
                    planned = self.plan.prepare(item)  # type: ignore[arg-type]
                    if isinstance(planned, Ready):
                        release.put(mine, planned.value)
                        yield from release.take()  # cache hits stream out, never pile up
                        continue
                    self.states[mine] = planned.state
                    task = planned.task
                    mapped = Target(
                        _map(task.path, self.path_map), task.in_tree, task.size, task.linked
                    )
                    batch.append((mine, mapped))
                    if len(batch) >= self.sizer.size:
                        self._send(batch)
                        batch = []
                if batch:  # the source ended, has nothing ready, or the reorder buffer is full
                    self._send(batch)
                    batch = []
                if self.suspects and self.in_flight == 0:
                    self._send([self.suspects.popleft()], alone=True)
                yield from release.take()
                if self.in_flight == 0:  # (so no suspect waits: one would have been sent)
                    if exhausted:
                        break
                    # Idle: wait for the source, unless it has items ready already (the
                    # feeder signals only when its queue goes from empty to not empty).
                    if not feed.pending():
                        wait([feed.wake], 1.0)  # (1 s: a safety net)
                    feed.drained()
                    continue
                future, result = next(self.running)
                self.in_flight -= 1
                for got, outcome in self._settle(future, result):
                    release.put(got, outcome)
        finally:
            self.running.clear()
            feed.close()

    def _send(self, batch: list[tuple[int, Target]], *, alone: bool = False) -> None:
        if self.fresh:
            self.heard.append(self.fresh)
            self.fresh = []
        while len(self.heard) > self.threads:
            self.heard.popleft()
        news = [item for told in self.heard for item in told][-MAX_RELAYED:]
        future = self.client.submit(judge_batch, self.recipe, batch, news, pure=False)
        self.batches[future.key] = (batch, alone)
        self.running.add(future)
        self.in_flight += 1

    def _settle(self, future: Any, result: Any) -> list[tuple[int, Outcome | None]]:
        """The outcomes a finished task settles.

        A task that failed (a file kept killing the workers it ran on until the scheduler
        gave up: KilledWorker) does not say which of its files is to blame, nor whether it
        only shared its workers with the culprit. Its files become suspects: new work waits,
        and each suspect runs alone on the cluster, so that the culprit is the only file lost,
        as with local workers."""
        batch, alone = self.batches.pop(future.key)
        failure = _failure(future, result)
        if failure is None:
            seconds, outcomes, told = result
            self.sizer.record(len(outcomes), seconds)
            self.fresh.extend(told)
            return [(seq, self.plan.finish(out, self.states.pop(seq))) for seq, out in outcomes]
        if not alone:
            self.suspects.extend(batch)
            return []
        seq = batch[0][0]
        message = f"Dask task failed: {internal_message(failure)}"
        return [(seq, self.plan.crashed(self.states.pop(seq), message))]


def _failure(future: Any, result: Any) -> BaseException | None:
    """Why a task did not finish, from what ``as_completed(raise_errors=False)`` gave: a
    (type, exception, traceback) triple for an error, the exception when it was cancelled."""
    if future.status == "finished":
        return None
    if isinstance(result, BaseException):
        return result
    if isinstance(result, tuple) and len(result) == 3 and isinstance(result[1], BaseException):
        return result[1]
    return RuntimeError(f"the task ended {future.status}")
