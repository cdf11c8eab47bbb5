"""The Dask backend's client side on a real LocalCluster started here: batches sized as they
go, input order on request, cache hits settled by the client, a worker killed in the middle of
a batch (the scheduler runs it again: every file reported once), a file that kills every
worker it meets (only that file is lost)."""

from __future__ import annotations

import json
import os
import signal

import pytest

from codeintegrity.scan.dask_backend import BatchSizer
from codeintegrity.scan.outcome import Judged, outcome_dict
from codeintegrity.scan.run import Judge, ScanCounter, scan
from codeintegrity.scan.walk import walk

from ..conftest import FIXTURES

# The file whose verification kills its worker, once, when the test arms it.
VICTIM = "t64_sha1_ph.exe"


def test_batches_start_small_grow_at_most_twofold_and_follow_the_cost_per_file():
    sizer = BatchSizer(first=2, most=64, task_seconds=0.25)
    assert sizer.size == 2
    sizer.record(2, 0.002)  # 1 ms a file: 250 would fill a task, but a size at most doubles
    assert sizer.size == 4
    for _ in range(10):
        sizer.record(sizer.size, sizer.size * 0.001)
    assert sizer.size == 64  # capped
    sizer.record(64, 64 * 0.1)  # files got slow (cold caches, big files): smaller tasks again
    assert sizer.size < 64
    slow = sizer.size
    sizer.record(0, 1.0)  # a batch without files says nothing about the cost per file
    assert sizer.size == slow
    sizer.record(1, 60.0)  # one very slow file: one file per task, never zero
    assert sizer.size == 1


def _key(outcome) -> tuple:
    d = outcome_dict(outcome)
    return d["path"], d["status"], tuple(d.get("event_ids", ())), json.dumps(d.get("decision"))


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    """A LocalCluster of 2 worker processes, forked from this process after the engine's
    entry point was wrapped: the wrapper kills its worker on VICTIM while an arming file
    exists (removed by the one worker that acts on it)."""
    pytest.importorskip("distributed", reason="the 'dask' extra (distributed) is not installed")
    import dask

    from codeintegrity import verify as engine
    from codeintegrity.scan.dask_backend import connect

    arm = tmp_path_factory.mktemp("arm") / "kill-next-victim"
    always = arm.with_name("kill-every-victim")
    real = engine.verify_path

    def verify_path(path, options=None, **kwargs):
        if str(path).endswith(VICTIM):
            if always.exists():
                os.kill(os.getpid(), signal.SIGKILL)
            try:
                os.unlink(arm)
            except FileNotFoundError:
                pass
            else:
                os.kill(os.getpid(), signal.SIGKILL)
        return real(path, options, **kwargs)

    patch = pytest.MonkeyPatch()
    patch.setattr(engine, "verify_path", verify_path)
    try:
        # A task is given up after killing 2 workers (3 by default): fewer restarts to wait for.
        with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
            session = connect("local:2")
    except Exception:
        patch.undo()
        raise
    session.client.arm = arm
    session.client.always = always
    try:
        yield session.client
    finally:
        session.close()
        patch.undo()


def test_ordered_on_dask_is_input_order_with_many_small_batches(client, fixture_trust):
    from codeintegrity.options import VerifyOptions
    from codeintegrity.scan.dask_backend import dask_scan

    judge = Judge(VerifyOptions(trust=fixture_trust))
    one = [_key(o) for o in scan(walk([str(FIXTURES)]), judge)]
    counter = ScanCounter()
    # Batches of at most 2 files: many tasks in flight, finishing out of order.
    sizer = BatchSizer(first=1, most=2)
    got = [
        _key(o)
        for o in dask_scan(
            walk([str(FIXTURES)]), judge, client, ordered=True, counter=counter, sizer=sizer
        )
    ]
    assert got == one and len(one) > 20
    assert counter.inputs == len(one)


def test_cache_hits_are_settled_by_the_client_and_match_the_first_run(
    client, fixture_trust, tmp_path
):
    from codeintegrity.options import VerifyOptions
    from codeintegrity.results_cache import ResultsCache
    from codeintegrity.scan.dask_backend import dask_scan

    cache = ResultsCache.open(str(tmp_path / "results.sqlite3"))
    try:
        judge = Judge(VerifyOptions(trust=fixture_trust), cache=cache)
        first = [_key(o) for o in dask_scan(walk([str(FIXTURES)]), judge, client, ordered=True)]
        stored = cache.stored
        assert stored > 20  # the client stored what the workers judged
        again = [_key(o) for o in dask_scan(walk([str(FIXTURES)]), judge, client, ordered=True)]
        assert again == first
        assert cache.hits >= stored and cache.stored == stored  # nothing went to the cluster
    finally:
        cache.close()


def test_a_worker_killed_in_a_batch_costs_no_file_and_reports_none_twice(client, fixture_trust):
    from codeintegrity.options import VerifyOptions
    from codeintegrity.scan.dask_backend import dask_scan

    judge = Judge(VerifyOptions(trust=fixture_trust))
    expected = sorted(_key(o) for o in scan(walk([str(FIXTURES)]), judge))
    client.arm.touch()
    # Large batches: the killed one carries files judged before the victim, judged again
    # on the worker the scheduler gives the batch to next.
    sizer = BatchSizer(first=8, most=8)
    got = [_key(o) for o in dask_scan(walk([str(FIXTURES)]), judge, client, sizer=sizer)]
    assert not client.arm.exists()  # the victim did kill a worker
    assert sorted(got) == expected  # each file once, none lost, same verdicts
    victim = [k for k in got if k[0].endswith(VICTIM)]
    assert len(victim) == 1 and victim[0][1] != "error"


def test_names_of_one_file_reuse_its_verification_on_dask(client, fixture_trust, tmp_path):
    import shutil

    from codeintegrity.options import VerifyOptions
    from codeintegrity.scan.dask_backend import dask_scan
    from codeintegrity.scan.links import LinkedFiles

    first = tmp_path / "d00" / "a.exe"
    first.parent.mkdir()
    shutil.copyfile(FIXTURES / "t64_sha256.exe", first)
    paths = [str(first)]
    for i in range(1, 40):
        other = tmp_path / f"d{i:02d}" / "a.exe"
        other.parent.mkdir()
        os.link(first, other)
        paths.append(str(other))
    judge = Judge(VerifyOptions(trust=fixture_trust))
    judge.linked = LinkedFiles(racy_window_ns=0)  # the files were just linked: ctime is now
    sizer = BatchSizer(first=1, most=1)
    got = list(dask_scan(walk([str(tmp_path)]), judge, client, ordered=True, sizer=sizer))
    assert [o.path for o in got] == paths
    assert all(isinstance(o, Judged) and o.report.ok for o in got)
    # What a worker opened is what the client's walk met (one machine): later names reuse it.
    assert 0 < judge.linked.reused < len(paths)


def test_judged_outcomes_carry_the_client_paths_and_sizes(client, fixture_trust):
    from codeintegrity.options import VerifyOptions
    from codeintegrity.scan.dask_backend import dask_scan

    judge = Judge(VerifyOptions(trust=fixture_trust))
    name = FIXTURES / "t64_sha256.exe"
    got = list(dask_scan(walk([str(name)]), judge, client))
    assert len(got) == 1 and isinstance(got[0], Judged)
    assert got[0].report.path == str(name) and got[0].report.ok
    assert got[0].size == name.stat().st_size


def test_a_file_that_kills_every_worker_is_the_only_file_lost(client, fixture_trust):
    from codeintegrity.options import VerifyOptions
    from codeintegrity.scan.dask_backend import dask_scan
    from codeintegrity.scan.outcome import Crashed

    judge = Judge(VerifyOptions(trust=fixture_trust))
    everything = scan(walk([str(FIXTURES)]), judge)
    expected = sorted(_key(o) for o in everything if not o.path.endswith(VICTIM))
    client.always.touch()
    try:
        sizer = BatchSizer(first=8, most=8)
        got = list(dask_scan(walk([str(FIXTURES)]), judge, client, sizer=sizer))
    finally:
        client.always.unlink()
    lost = [o for o in got if o.path.endswith(VICTIM)]
    assert len(lost) == 1 and isinstance(lost[0], Crashed)
    assert "Dask task failed" in lost[0].message and "KilledWorker" in lost[0].message
    # Its batch went again file by file: the others are judged as they would be locally.
    assert sorted(_key(o) for o in got if o is not lost[0]) == expected


def test_a_batch_reports_the_chains_it_validated_and_one_taught_them_validates_none(
    fixture_trust,
):
    # What runs on a worker, called here: the chains one batch validated travel with the next
    # batches; a worker that gets them judges alike without building those chains itself.
    from codeintegrity.authenticode import certcache, chaincache
    from codeintegrity.options import VerifyOptions
    from codeintegrity.scan.dask_backend import JudgeRecipe, judge_batch
    from codeintegrity.scan.walk import Target

    recipe = JudgeRecipe.of(Judge(VerifyOptions(trust=fixture_trust)))
    names = ["t64_sha256.exe", "t64_sha256_ph_ts.exe", "t64_nested_sha1+sha256ph.exe"]
    batch = [(i, Target(str(FIXTURES / n), False, 0)) for i, n in enumerate(names)]
    try:
        certcache.clear()
        chaincache.clear()
        _seconds, first, told = judge_batch(recipe, batch)
        assert told and chaincache.stats()["misses"] == len(told)
        certcache.clear()
        chaincache.clear()  # another worker: nothing validated yet
        _seconds, second, again = judge_batch(recipe, batch, told)
        assert chaincache.stats()["misses"] == 0 and again == []
        assert [outcome_dict(o) for _s, o in second] == [outcome_dict(o) for _s, o in first]
    finally:
        chaincache.share(False)
        chaincache.clear()
