"""Worker processes: same outcomes as one process, input order on request, a crashing worker
costs one file, Ctrl-C leaves no process behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

from codeintegrity.cli import exit_codes
from codeintegrity.scan.outcome import Crashed, Judged, outcome_dict
from codeintegrity.scan.pool import Plan, Ready, Send, parallel_scan, run_pool
from codeintegrity.scan.run import Judge, ScanCounter, scan
from codeintegrity.scan.walk import walk

from ..conftest import FIXTURES
from .procs import children


def _key(outcome) -> tuple:
    d = outcome_dict(outcome)
    return d["path"], d["status"], tuple(d.get("event_ids", ())), json.dumps(d.get("decision"))


def test_workers_give_the_same_results_as_one_process(fixture_trust):
    from codeintegrity.options import VerifyOptions

    judge = Judge(VerifyOptions(trust=fixture_trust))
    one = [_key(o) for o in scan(walk([str(FIXTURES)]), judge)]
    counter = ScanCounter()
    ordered = [
        _key(o)
        for o in parallel_scan(walk([str(FIXTURES)]), judge, 2, ordered=True, counter=counter)
    ]
    assert ordered == one  # --sorted: input order
    assert len(one) > 20 and counter.inputs == len(one)
    unordered = [_key(o) for o in parallel_scan(walk([str(FIXTURES)]), judge, 3)]
    assert sorted(unordered) == sorted(one)


class _CrashOn(Judge):
    """Kills its own process (a segfault, as a broken C library would) on one file."""

    def unjudged(self, target):
        if target.path.endswith("t64_sha1_ph.exe"):
            os.kill(os.getpid(), signal.SIGSEGV)
        return super().unjudged(target)


def test_a_crashing_worker_loses_one_file(fixture_trust):
    from codeintegrity.options import VerifyOptions

    options = VerifyOptions(trust=fixture_trust)
    names = ["t64_sha256.exe", "t64_sha1_ph.exe", "t64_sha256_ph_ts.exe", "t64_sha256.exe"]
    paths = [str(FIXTURES / n) for n in names]
    got = list(parallel_scan(walk(paths), _CrashOn(options), 2, ordered=True))
    assert [type(o) for o in got] == [Judged, Crashed, Judged, Judged]
    assert got[1].path == paths[1] and "SIGSEGV" in got[1].message
    assert all(o.report.ok for o in got if isinstance(o, Judged))


def test_ctrl_c_with_workers_exits_130_flushes_and_leaves_no_orphans(tmp_path, fixture_trust):
    tree = tmp_path / "tree"
    tree.mkdir()
    shutil.copyfile(FIXTURES / "t64_sha256.exe", tree / "a.exe")
    env = dict(os.environ, CODEINTEGRITY_HOME=str(tmp_path))
    anchors = ["--no-default-trust", "--trust", str(FIXTURES.parent / "pki" / "ca.pem")]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "codeintegrity",
            "verify",
            "--json",
            "--no-store",
            "--jobs",
            "2",
            *anchors,
            "--files-from",
            "-",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        proc.stdin.write(f"{tree}\n".encode())
        proc.stdin.flush()
        first = json.loads(proc.stdout.readline())
        assert first["status"] == "valid"
        workers = children(proc.pid)
        assert len(workers) == 2
        # Ctrl-C reaches the whole foreground process group: the parent and its workers.
        os.kill(proc.pid, signal.SIGINT)
        for pid in workers:
            try:
                os.kill(pid, signal.SIGINT)
            except ProcessLookupError:
                pass
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == exit_codes.INTERRUPTED, err
    assert b"interrupted after 1 of 1 files" in err and b"Traceback" not in err
    assert out == b""
    for pid in workers:
        assert not os.path.exists(f"/proc/{pid}") or _zombie_of_nobody(pid)


def _zombie_of_nobody(pid: int) -> bool:
    # Reaped workers are gone; one that is listed must at least not be running.
    with open(f"/proc/{pid}/stat") as handle:
        return handle.read().split(")")[-1].split()[0] in ("Z", "X")


class _Squares(Plan):
    """A plan over numbers: negatives are settled in the parent, the rest go to a worker."""

    def prepare(self, item):
        return Ready(("parent", item)) if item < 0 else Send(item, item)

    def finish(self, result, state):
        return ("worker", state, result)

    def crashed(self, state, message):
        return ("crashed", state, message)


def _square_or_fail(n: int) -> int:
    if n == 3:
        raise ValueError("three")
    if n == 5:
        os.kill(os.getpid(), signal.SIGKILL)
    return n * n


def test_the_pool_runs_any_plan_and_a_failing_task_costs_only_itself():
    got = list(run_pool([1, -2, 3, 4, 5, 6], _Squares(), _square_or_fail, 2, ordered=True))
    assert got[:2] == [("worker", 1, 1), ("parent", -2)]
    assert got[2][:2] == ("crashed", 3) and "ValueError: three" in got[2][2]
    assert got[3] == ("worker", 4, 16)
    assert got[4][:2] == ("crashed", 5) and "SIGKILL" in got[4][2]
    assert got[5] == ("worker", 6, 36)


class _AsIs(_Squares):
    def prepare(self, item):
        return Send(item, "task")


def _result_of(task):
    return (lambda: None) if task == "result does not pickle" else task


def test_a_task_or_result_that_does_not_pickle_is_reported_not_raised():
    items = ["a", lambda: None, "result does not pickle", "b"]
    got = list(run_pool(items, _AsIs(), _result_of, 2, ordered=True))
    assert got[0] == ("worker", "task", "a") and got[3] == ("worker", "task", "b")
    assert got[1][0] == "crashed" and "pickle" in got[1][2].lower()
    assert got[2][0] == "crashed" and "pickle" in got[2][2].lower()


class _FirstIsSent(Plan):
    """Input 0 goes to a worker, every later one is settled in the parent (a cached result)."""

    def prepare(self, item):
        return Send(item, item) if item == 0 else Ready(("parent", item))

    def finish(self, result, state):
        return ("worker", state, result)

    def crashed(self, state, message):
        return ("crashed", state, message)


def _when_released(marker: str):
    def work(item: int) -> int:
        while not os.path.exists(marker):  # the source has filled the feeder's queue
            time.sleep(0.01)
        return item

    return work


def test_ordered_results_that_fill_the_reorder_window_do_not_stall_the_pool(tmp_path, monkeypatch):
    """Ordered, with the reorder window full behind a slow first task: when that task comes
    back the pool must hand out work again at once. It used to look at the window before
    letting the finished results out, then wait for a wake-up from a source whose queue was
    full (so it never wrote one) with every worker idle: a hang, later a one-second stall
    per occurrence with the re-check. The re-check is switched off here, so a regression
    hangs; SIGALRM turns that into a failure."""
    from codeintegrity.scan import pool

    monkeypatch.setattr(pool, "_RECHECK_SECONDS", None)
    marker = tmp_path / "queue-full"
    jobs = 1
    taken_before_window = 4 * jobs * pool.HELD  # the ordered reorder window
    queue_size = 4 * jobs * pool.HELD  # the feeder's bounded queue
    total = taken_before_window + queue_size + 50

    def source():
        for item in range(total):
            if item == taken_before_window + queue_size:
                marker.touch()  # every earlier item was queued (and its wake-up written)
            yield item

    def hung(signum, frame):
        raise TimeoutError("run_pool stalled with the reorder window full")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(60)
    try:
        got = list(run_pool(source(), _FirstIsSent(), _when_released(str(marker)), jobs,
                            ordered=True))  # fmt: skip
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert got == [("worker", 0, 0)] + [("parent", item) for item in range(1, total)]


class _LockingSink:
    """Holds a lock for the whole of each write, as SQLite holds its allocator mutex."""

    uri = "fake:locking"

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.entered = threading.Event()
        self.may_finish = threading.Event()

    def write(self, events):
        with self.lock:
            self.entered.set()
            self.may_finish.wait(60)
        return events

    def close(self) -> None:
        pass

    def lock_is_free(self, _question: str) -> bool:
        return self.lock.acquire(blocking=False)


class _Untouched(Plan):
    def prepare(self, item):
        return Send(item, item)

    def finish(self, result, state):
        return result

    def crashed(self, state, message):
        return message


def test_workers_are_not_forked_in_the_middle_of_an_event_sink_write():
    """A worker forked while a sink's thread is inside a write inherits the locks that write
    holds, held for good (an `image --jobs` worker stuck on SQLite's allocator mutex, taken by
    the event store's writer). The fork waits for the write; here the write ends a moment
    after the pool started forking, and the worker must find the lock free."""
    from codeintegrity.events.pipeline import EventPipeline

    from ..events.reports import HOST, tampered_report

    sink = _LockingSink()
    pipeline = EventPipeline([sink], host=HOST)
    try:
        assert pipeline.emit_report(tampered_report()) > 0
        assert sink.entered.wait(60)  # the writer is inside its write, holding the lock
        threading.Timer(1.0, sink.may_finish.set).start()
        # The worker inherits the sink, lock included, through the fork.
        got = list(run_pool(["is the lock free?"], _Untouched(), sink.lock_is_free, 1))
    finally:
        sink.may_finish.set()
        pipeline.close()
    assert got == [True]


def _hash_in_threads(task: str) -> str:
    from codeintegrity.pe import hashpass

    return hashpass._worker().submit(str.upper, task).result(timeout=20)


def test_a_worker_forked_after_its_parent_hashed_in_threads_starts_its_own_threads():
    # The parent's page-hashing pool exists (it hashed a large file before the workers were
    # forked); its threads do not exist in a child, which must not wait for them forever.
    from codeintegrity.pe import hashpass

    assert hashpass._worker().submit(str.upper, "parent").result() == "PARENT"
    got = list(run_pool(["a", "b", "c"], _AsIs(), _hash_in_threads, 2, ordered=True))
    assert got == [("worker", "task", "A"), ("worker", "task", "B"), ("worker", "task", "C")]
