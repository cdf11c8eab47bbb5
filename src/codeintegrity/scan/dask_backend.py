"""Judge files on a Dask cluster (the ``distributed`` scheduler); the client walks, owns the
results cache, the output and the events, exactly as with local worker processes.

Workers read the files themselves, from storage they share with the client (NFS or SMB mounts,
the same image files); ``path_map`` rewrites a client path prefix to the prefix the workers see.
Paths go out in batches (``BATCH`` files per task), with a bounded number of batches in flight.
When a worker is lost the scheduler runs its tasks again elsewhere; each task's result is read
once, so a file is never reported twice.

The verification options travel as a recipe (the trust anchors' DER, the other option values)
and are rebuilt once per worker process: a trust store holds locks and caches that do not
pickle. Catalogs (a local SQLite index) do not travel: ``--catalog`` is refused with Dask.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from .outcome import Crashed, Outcome
from .pool import JudgePlan, Ready, Release, not_pe_dropped
from .run import Judge, ScanCounter, internal_message
from .walk import Target, WalkItem

if TYPE_CHECKING:
    from ..options import VerifyOptions
    from ..results_cache import Pending

BATCH = 16  # files per task: amortises the scheduler's per-task cost (~1 ms) over ~16 files
IN_FLIGHT_PER_WORKER = 3  # batches queued per worker thread


class DaskUnavailable(Exception):
    """The `dask` extra is not installed, or the scheduler cannot be reached."""


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
            anchors = tuple(cert.dump() for cert in trust.certificates)
            name = trust.name
        return cls(anchors, name, replace(options, trust=None))

    def build(self) -> Judge:
        from ..authenticode.trust import TrustStore

        key = hash((self.anchors, self.trust_name, repr(self.options)))
        judge = _WORKER_JUDGES.get(key)
        if judge is None:
            trust = TrustStore(self.anchors, self.trust_name)
            judge = _WORKER_JUDGES[key] = Judge(replace(self.options, trust=trust))
        return judge


# One judge per worker process and recipe: chains and trust registries are built once.
_WORKER_JUDGES: dict[int, Judge] = {}


def judge_batch(
    recipe: JudgeRecipe, batch: Sequence[tuple[int, Target]]
) -> list[tuple[int, Outcome | None]]:
    """Runs on a Dask worker: verify each file of the batch (no cache, no policy)."""
    judge = recipe.build()
    out: list[tuple[int, Outcome | None]] = []
    for seq, target in batch:
        try:
            out.append((seq, judge.unjudged(target)))
        except Exception as exc:  # noqa: BLE001 - one file, never the batch
            out.append((seq, Crashed(target.path, internal_message(exc))))
    return out


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
    """A client, and the LocalCluster it started (closed together)."""

    client: Any
    cluster: Any = None

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def connect(address: str) -> Session:
    """A distributed Client: ``local:N`` starts a LocalCluster of N single-threaded worker
    processes (closed with the client); anything else is a scheduler address."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise DaskUnavailable(
            "--dask needs the 'dask' extra: pip install 'codeintegrity[dask]'"
        ) from None
    try:
        if address.startswith("local:"):
            workers = int(address.removeprefix("local:") or "0")
            if workers < 1:
                raise DaskUnavailable(f"{address!r}: local:N needs N >= 1")
            cluster = LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                silence_logs=40,
            )
            return Session(Client(cluster), cluster)
        return Session(Client(address, timeout="10s"))
    except (OSError, TimeoutError) as exc:
        raise DaskUnavailable(f"cannot reach the Dask scheduler {address}: {exc}") from None


def dask_scan(
    items: Iterable[WalkItem],
    judge: Judge,
    client: Any,
    *,
    ordered: bool = False,
    counter: ScanCounter | None = None,
    path_map: Sequence[tuple[str, str]] = (),
) -> Iterator[Outcome]:
    """Like :func:`~.pool.parallel_scan`, on the cluster behind ``client``: the same plan
    (cache and policy in the client), batches of tasks instead of worker processes."""
    yield from not_pe_dropped(
        _run(items, JudgePlan(judge, counter), judge, client, ordered, path_map), counter
    )


def _run(
    items: Iterable[WalkItem],
    plan: JudgePlan,
    judge: Judge,
    client: Any,
    ordered: bool,
    path_map: Sequence[tuple[str, str]],
) -> Iterator[Outcome | None]:
    from distributed import as_completed

    recipe = client.scatter(JudgeRecipe.of(judge), broadcast=True)
    threads = max(1, sum(client.nthreads().values()))
    limit = threads * IN_FLIGHT_PER_WORKER
    source = iter(items)
    exhausted = False
    seq = 0
    release: Release[Outcome | None] = Release(ordered)
    states: dict[int, tuple[Target, Pending | None]] = {}
    running = as_completed()
    batches: dict[Any, list[int]] = {}  # future key -> the sequence numbers it carries
    in_flight = 0
    try:
        while True:
            batch: list[tuple[int, Target]] = []
            while not exhausted and in_flight < limit and len(batch) < BATCH:
                item = next(source, None)
                if item is None:
                    exhausted = True
                    break
                mine = seq
                seq += 1
                planned = plan.prepare(item)
                if isinstance(planned, Ready):
                    release.put(mine, planned.value)
                    continue
                states[mine] = planned.state
                task = planned.task
                batch.append((mine, Target(_map(task.path, path_map), task.in_tree, task.size)))
                if len(batch) == BATCH or (release.done and not ordered):
                    break
            if batch:
                future = client.submit(judge_batch, recipe, batch, pure=False)
                batches[future.key] = [mine for mine, _ in batch]
                running.add(future)
                in_flight += 1
            yield from release.take()
            if exhausted and in_flight == 0 and not release.done:
                break
            if batch and in_flight < limit and not exhausted:
                continue  # keep filling the cluster before waiting
            if in_flight:
                future = next(running)
                in_flight -= 1
                for got, outcome in _result(future, batches.pop(future.key), plan, states):
                    release.put(got, outcome)
    finally:
        running.clear()


def _result(
    future: Any,
    seqs: list[int],
    plan: JudgePlan,
    states: dict[int, tuple[Target, Pending | None]],
) -> list[tuple[int, Outcome | None]]:
    try:
        result: list[tuple[int, Outcome | None]] = future.result()
    except Exception as exc:  # noqa: BLE001 - a task that failed on the cluster
        # e.g. KilledWorker: the scheduler gave up after the task killed several workers.
        message = f"Dask task failed: {internal_message(exc)}"
        return [(seq, plan.crashed(states.pop(seq), message)) for seq in seqs]
    return [(seq, plan.finish(outcome, states.pop(seq))) for seq, outcome in result]
