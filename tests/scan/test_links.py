"""Files with more than one name in one run: judged once, each name reported on its own."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace

import pytest

from codeintegrity import verify as engine
from codeintegrity.options import VerifyOptions
from codeintegrity.policy.load import parse_policy
from codeintegrity.scan.links import LinkedFiles
from codeintegrity.scan.outcome import Judged, encode_report, outcome_dict
from codeintegrity.scan.pool import parallel_scan
from codeintegrity.scan.run import Judge, scan
from codeintegrity.scan.walk import Target, file_identity, same_file, walk

from ..conftest import FIXTURES, PKI

SIGNED = FIXTURES / "t64_sha256.exe"


def _settled(*paths: os.PathLike[str] | str) -> None:
    """Move the files' times out of the racy window (a change this recent is not trusted)."""
    for path in paths:
        os.utime(path, (1_000_000_000, 1_000_000_000))


def _linked_tree(tmp_path, names: int) -> list[str]:
    """One signed file under ``names`` hard-linked names in folders of their own, its ctime
    (which utime cannot set) kept out of the racy window by a judge without one."""
    first = tmp_path / "d000" / "a.exe"
    first.parent.mkdir()
    shutil.copyfile(SIGNED, first)
    _settled(first)
    paths = [str(first)]
    for i in range(1, names):
        other = tmp_path / f"d{i:03d}" / "a.exe"
        other.parent.mkdir()
        os.link(first, other)
        paths.append(str(other))
    return paths


def _two_names(folder, name: str = "a.exe"):
    """A copy of the signed fixture with a second name beside it."""
    path = folder / name
    shutil.copyfile(SIGNED, path)
    _settled(path)
    os.link(path, folder / f"{name}.2")
    return path


def _counting(monkeypatch) -> list[str]:
    judged: list[str] = []
    real = engine.verify_path

    def counted(path, options, **kwargs):
        judged.append(path)
        return real(path, options, **kwargs)

    monkeypatch.setattr(engine, "verify_path", counted)
    return judged


def _swap_in(monkeypatch, name: str, decoy) -> object:
    """Make the engine open ``decoy`` whenever it is asked for a path ending in ``name`` (a link
    or folder swapped while that file is judged); returns the real engine entry point."""
    real = engine.verify_path

    def swapped(path, options, **kwargs):
        if str(path).endswith(name):
            return replace(real(str(decoy), options, **kwargs), path=str(path))
        return real(path, options, **kwargs)

    monkeypatch.setattr(engine, "verify_path", swapped)
    return real


def _judge(fixture_trust, **kwargs) -> Judge:
    judge = Judge(VerifyOptions(trust=fixture_trust), **kwargs)
    judge.linked = LinkedFiles(racy_window_ns=0)  # the files were just linked: ctime is now
    return judge


def test_the_walk_marks_files_with_another_name(tmp_path):
    alone = tmp_path / "alone.exe"
    alone.write_bytes(b"MZ")
    linked = tmp_path / "linked.exe"
    linked.write_bytes(b"MZ")
    os.link(linked, tmp_path / "second.exe")
    (tmp_path / "to_alone.exe").symlink_to(alone)
    (tmp_path / "to_linked.exe").symlink_to(linked)
    got = {os.path.basename(t.path): t.linked for t in walk([str(tmp_path)])}
    identity = file_identity(linked.stat())
    assert got == {
        "alone.exe": None,
        "linked.exe": identity,
        "second.exe": identity,
        "to_alone.exe": None,
        "to_linked.exe": None,  # a symbolic link is not one of the file's names
    }
    named = list(walk([str(tmp_path / "second.exe"), str(alone)]))
    assert [t.linked for t in named] == [identity, None]


def test_one_process_judges_the_bytes_once_and_reports_every_name(
    tmp_path, monkeypatch, fixture_trust
):
    paths = _linked_tree(tmp_path, 5)
    judged = _counting(monkeypatch)
    judge = _judge(fixture_trust)
    got = list(scan(walk([str(tmp_path)]), judge))
    assert judged == [paths[0]]
    assert judge.linked.reused == 4
    assert [o.path for o in got] == paths
    dicts = [outcome_dict(o) for o in got]
    assert [d["path"] for d in dicts] == paths
    assert all(d["status"] == "valid" for d in dicts)
    # Apart from its path, each name's report is the first one's.
    assert len({json.dumps({**d, "path": ""}, sort_keys=True) for d in dicts}) == 1


def test_each_name_gets_its_own_policy_decision(tmp_path, monkeypatch, fixture_trust):
    paths = _linked_tree(tmp_path, 3)
    authentihash = engine.verify_path(paths[0], VerifyOptions(trust=fixture_trust)).authentihash
    policy = parse_policy(f'mode = "enforce"\n[deny]\nhashes = ["{authentihash["sha256"]}"]\n')
    judged = _counting(monkeypatch)
    got = list(scan(walk([str(tmp_path)]), _judge(fixture_trust, policy=policy)))
    assert len(judged) == 1
    assert [o.path for o in got] == paths
    for outcome in got:
        assert isinstance(outcome, Judged)
        assert outcome.report.path == outcome.path
        assert outcome.report.decision is not None and not outcome.report.decision.allowed


def test_workers_reuse_what_an_earlier_name_was_judged_to(tmp_path, fixture_trust):
    paths = _linked_tree(tmp_path, 120)
    judge = _judge(fixture_trust)
    got = list(parallel_scan(walk([str(tmp_path)]), judge, 2, ordered=True))
    assert [o.path for o in got] == paths
    assert all(isinstance(o, Judged) and o.report.ok for o in got)
    # Names handed out while the first was still being judged are judged themselves; the
    # rest reuse it (the workers hold at most 64 files here).
    assert 120 - 64 <= judge.linked.reused < 120


def test_a_file_changed_within_the_racy_window_is_judged_again(
    tmp_path, monkeypatch, fixture_trust
):
    paths = _linked_tree(tmp_path, 2)
    judged = _counting(monkeypatch)
    judge = Judge(VerifyOptions(trust=fixture_trust))  # default window: linking changed ctime
    list(scan(walk([str(tmp_path)]), judge))
    assert judged == paths
    assert judge.linked.reused == 0


def _encoded(path, fixture_trust):
    return encode_report(engine.verify_path(str(path), VerifyOptions(trust=fixture_trust)))


def test_what_is_not_kept(tmp_path, fixture_trust):
    path = _two_names(tmp_path)
    identity = file_identity(path.stat())
    encoded = _encoded(path, fixture_trust)
    later = identity[4] + 10**10  # ten seconds after the last change
    linked = LinkedFiles(clock_ns=lambda: later)
    linked.keep(identity, 2, encoded)
    assert linked.get(identity, fixed_time=False) is encoded
    # A primitive that raised may work next time.
    failed = LinkedFiles(clock_ns=lambda: later)
    failed.keep(identity, 2, replace(encoded, storable=False))
    assert identity not in failed
    # Changed within the racy window (one second before the clock).
    racy = LinkedFiles(clock_ns=lambda: identity[4] + 10**9)
    racy.keep(identity, 2, encoded)
    assert identity not in racy
    # A file with one name: no other name will ask.
    single = LinkedFiles(clock_ns=lambda: later)
    single.keep(identity, 1, encoded)
    assert identity not in single


def test_an_entry_goes_once_every_other_name_was_met(tmp_path, fixture_trust):
    path = _two_names(tmp_path)
    identity = file_identity(path.stat())
    encoded = _encoded(path, fixture_trust)
    linked = LinkedFiles(clock_ns=lambda: identity[4] + 10**10)
    linked.keep(identity, 3, encoded)  # three names: two more to meet after the first
    linked.keep(identity, 3, encoded)  # a name judged in flight meanwhile: no second count
    assert linked.get(identity, fixed_time=True) is encoded
    assert linked.get(identity, fixed_time=True) is encoded
    assert linked.get(identity, fixed_time=True) is None
    assert linked.reused == 2


def test_a_verdict_past_its_chain_boundary_is_not_reused(tmp_path, fixture_trust):
    path = _two_names(tmp_path)
    identity = file_identity(path.stat())
    bounded = replace(_encoded(path, fixture_trust), boundary=2_000_000_000.0)
    now = [int(1_999_999_999 * 1e9)]
    linked = LinkedFiles(clock_ns=lambda: now[0])
    linked.keep(identity, 4, bounded)
    assert linked.get(identity, fixed_time=False) is bounded
    now[0] = int(2_000_000_001 * 1e9)
    assert linked.get(identity, fixed_time=True) is bounded  # --at: no boundary moves it
    assert linked.get(identity, fixed_time=False) is None


def test_the_oldest_go_first_past_the_byte_bound(fixture_trust):
    encoded = _encoded(SIGNED, fixture_trust)
    ids = [(0, i, 0, 0, 0) for i in range(3)]
    linked = LinkedFiles(2 * len(encoded.text), clock_ns=lambda: 10**30)  # room for two
    for identity in ids:
        linked.keep(identity, 2, encoded)
    assert [i in linked for i in ids] == [False, True, True]


def test_a_file_swapped_in_while_judged_lends_its_verdict_to_no_one(
    tmp_path, monkeypatch, fixture_trust
):
    """The walk met one file; by the time the engine opened the path, another file was
    there (a symbolic link or a folder swapped meanwhile). Its verdict must not go to the
    names of the file the walk met."""
    paths = _linked_tree(tmp_path, 2)
    other = tmp_path / "other.exe"
    shutil.copyfile(FIXTURES / "bad_flip_text.exe", other)
    os.link(other, tmp_path / "other-2.exe")  # names to share with, were it shared
    _swap_in(monkeypatch, os.path.join("d000", "a.exe"), other)  # the first name opens it
    judged = _counting(monkeypatch)
    judge = _judge(fixture_trust)
    got = {
        o.path: o.status
        for o in scan(walk([str(tmp_path / "d000"), str(tmp_path / "d001")]), judge)
    }
    assert judged == paths  # the second name was judged itself
    assert got == {paths[0]: "invalid", paths[1]: "valid"}
    assert judge.linked.reused == 0


def test_a_name_that_no_longer_names_the_file_is_judged_itself(
    tmp_path, monkeypatch, fixture_trust
):
    paths = _linked_tree(tmp_path, 2)
    items = list(walk([str(tmp_path)]))
    os.unlink(paths[1])  # the second name is gone (or swapped) after the walk met it
    shutil.copyfile(SIGNED, paths[1])
    judged = _counting(monkeypatch)
    judge = _judge(fixture_trust)
    list(scan(items, judge))
    assert judged == paths
    assert judge.linked.reused == 0


def test_a_non_pe_named_directly_is_not_reported_for_its_name_in_a_tree(tmp_path, fixture_trust):
    text = tmp_path / "notes.txt"
    text.write_text("not a PE\n")
    _settled(text)
    tree = tmp_path / "tree"
    tree.mkdir()
    os.link(text, tree / "notes-link.txt")
    judge = _judge(fixture_trust)
    got = list(scan(walk([str(text), str(tree)]), judge))
    assert [(o.path, o.status) for o in got] == [(str(text), "malformed")]


def test_a_cached_non_pe_named_directly_is_not_reported_in_a_tree(tmp_path, fixture_trust):
    """The results cache, across runs: named directly, a file that is not a PE is judged
    (malformed) and stored; met again in a tree, it is not a PE and is not reported."""
    from codeintegrity.results_cache import ResultsCache

    tree = tmp_path / "tree"
    tree.mkdir()
    text = tree / "notes.txt"
    text.write_text("not a PE\n")
    _settled(text)
    # No racy window: writing the file just now changed its ctime.
    cache = ResultsCache.open(str(tmp_path / "results.sqlite3"), racy_window_ns=0)
    options = VerifyOptions(trust=fixture_trust)
    first = list(scan(walk([str(text)]), Judge(options, cache=cache)))
    assert [o.status for o in first] == ["malformed"]
    cache.flush()
    hit, _ = Judge(options, cache=cache).from_cache(Target(str(text)))
    assert hit is not None and hit.status == "malformed"  # stored, as for any file named
    for jobs in (1, 2):
        judge = Judge(options, cache=cache)
        again = list(
            scan(walk([str(tree)]), judge)
            if jobs == 1
            else parallel_scan(walk([str(tree)]), judge, 2)
        )
        assert again == []
    cache.close()


def test_cli_gives_every_name_of_a_linked_file_the_report_a_fresh_judgement_gives(tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    paths = _linked_tree(tree, 3)
    time.sleep(2.1)  # past the racy window (linking set the ctime): later names reuse the first

    def run(*args: str) -> list[dict]:
        out = subprocess.run(
            [sys.executable, "-m", "codeintegrity", "verify", "--json", "--no-store",
             "--no-cache", "--no-default-trust", "--trust", str(PKI / "ca.pem"),
             "--trust", str(PKI / "tsaca.pem"), *args],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        return [json.loads(line) for line in out.stdout.splitlines()]

    lines = run("--jobs", "1", "--sorted", str(tree))
    (fresh,) = run(str(SIGNED))
    assert [d["path"] for d in lines] == paths
    assert all({**d, "path": ""} == {**fresh, "path": ""} for d in lines)


def test_same_file_compares_devices_only_on_this_machine():
    met = (1, 2, 3, 4, 5)
    assert same_file(met, met)
    assert not same_file((9, 2, 3, 4, 5), met)  # another device here: another file
    assert same_file((9, 2, 3, 4, 5), met, remote=True)  # a worker's own device number
    assert not same_file((9, 7, 3, 4, 5), met, remote=True)


@pytest.mark.parametrize("jobs", [1, 2])
def test_the_results_cache_stores_nothing_for_a_file_swapped_in_while_judged(
    jobs, tmp_path, monkeypatch, fixture_trust
):
    """Stat'ed by path before and after, the file is the same; the engine opened another one
    in between (a folder or link swapped meanwhile). That verdict must not be stored for it."""
    from codeintegrity.results_cache import ResultsCache

    tree = tmp_path / "tree"
    tree.mkdir()
    shutil.copyfile(FIXTURES / "bad_flip_text.exe", tree / "evil.exe")
    decoy = tmp_path / "signed.exe"
    shutil.copyfile(SIGNED, decoy)
    real = _swap_in(monkeypatch, "evil.exe", decoy)
    cache = ResultsCache.open(str(tmp_path / "results.sqlite3"), racy_window_ns=0)
    judge = Judge(VerifyOptions(trust=fixture_trust), cache=cache)
    items = walk([str(tree)])
    got = list(scan(items, judge) if jobs == 1 else parallel_scan(items, judge, jobs))
    assert [o.status for o in got] == ["valid"]  # what the engine was given, this once
    cache.flush()
    assert cache.stored == 0
    monkeypatch.setattr(engine, "verify_path", real)
    again = list(scan(walk([str(tree)]), Judge(VerifyOptions(trust=fixture_trust), cache=cache)))
    assert [o.status for o in again] == ["invalid"]  # judged again, from its own bytes
    cache.close()


def test_a_cached_file_that_cannot_be_sniffed_any_more_is_unreadable_not_a_crash(
    tmp_path, monkeypatch, fixture_trust
):
    """A malformed hit for a file of a tree is sniffed for MZ in the parent (before any worker
    sees it): a file gone or unreadable by then is one Unreadable outcome, not an aborted run."""
    from codeintegrity.results_cache import ResultsCache
    from codeintegrity.scan import run
    from codeintegrity.scan.walk import Unreadable

    tree = tmp_path / "tree"
    tree.mkdir()
    broken = tree / "broken.exe"
    broken.write_bytes(b"MZ" + bytes(30))  # a PE that does not parse: malformed
    _settled(broken)
    cache = ResultsCache.open(str(tmp_path / "results.sqlite3"), racy_window_ns=0)
    options = VerifyOptions(trust=fixture_trust)
    assert [o.status for o in scan(walk([str(tree)]), Judge(options, cache=cache))] == ["malformed"]
    cache.flush()

    def vanished(path):
        raise FileNotFoundError(2, "No such file or directory", path)

    monkeypatch.setattr(run, "starts_with_mz", vanished)
    for jobs in (1, 2):
        judge = Judge(options, cache=cache)
        items = walk([str(tree)])
        got = list(scan(items, judge) if jobs == 1 else parallel_scan(items, judge, jobs))
        assert len(got) == 1 and isinstance(got[0], Unreadable), got
        assert got[0].path == str(broken)
    cache.close()


def test_the_cache_entry_point_stores_nothing_for_a_file_swapped_in_while_judged(
    tmp_path, monkeypatch, fixture_trust
):
    from codeintegrity.results_cache import ResultsCache

    evil = tmp_path / "evil.exe"
    shutil.copyfile(FIXTURES / "bad_flip_text.exe", evil)
    decoy = tmp_path / "signed.exe"
    shutil.copyfile(SIGNED, decoy)
    options = VerifyOptions(trust=fixture_trust)
    cache = ResultsCache.open(str(tmp_path / "results.sqlite3"), racy_window_ns=0)
    real = _swap_in(monkeypatch, "evil.exe", decoy)
    assert cache.verify(str(evil), options).status == "valid"  # what the engine was given
    assert cache.stored == 0
    monkeypatch.setattr(engine, "verify_path", real)
    assert cache.verify(str(evil), options).status == "invalid"
    assert cache.stored == 1
    cache.close()


def test_names_reused_in_a_run_are_stored_in_the_results_cache_too(
    tmp_path, monkeypatch, fixture_trust
):
    from codeintegrity.results_cache import ResultsCache

    (tmp_path / "tree").mkdir()
    paths = _linked_tree(tmp_path / "tree", 4)
    cache = ResultsCache.open(str(tmp_path / "results.sqlite3"), racy_window_ns=0)
    judged = _counting(monkeypatch)
    judge = _judge(fixture_trust, cache=cache)
    first = [o.path for o in scan(walk([str(tmp_path / "tree")]), judge)]
    assert first == paths and len(judged) == 1 and judge.linked.reused == 3
    cache.flush()
    assert cache.stored == 4  # the judged name and the three that reused it
    again = list(scan(walk([str(tmp_path / "tree")]), _judge(fixture_trust, cache=cache)))
    assert [o.path for o in again] == paths and len(judged) == 1  # all from the cache
    assert all(o.status == "valid" for o in again)
    cache.close()


def test_the_racy_window_counts_back_from_when_the_file_was_opened(tmp_path, fixture_trust):
    """A change one second before the file was opened could hide a same-size rewrite after
    it, however long the verification took: neither the memo nor the cache keeps it. Three
    seconds before, both do, even though the file was written just now."""
    from codeintegrity.results_cache import ResultsCache
    from codeintegrity.scan.walk import Opened

    path = _two_names(tmp_path)
    st = path.stat()
    identity = file_identity(st)
    changed = max(st.st_mtime_ns, st.st_ctime_ns)
    encoded = _encoded(path, fixture_trust)
    linked = LinkedFiles(clock_ns=lambda: changed + 60 * 10**9)  # kept a minute later
    linked.keep(identity, 2, encoded, since=changed + 10**9)
    assert identity not in linked
    linked.keep(identity, 2, encoded, since=changed + 3 * 10**9)
    assert identity in linked

    options = VerifyOptions(trust=fixture_trust)
    cache = ResultsCache.open(str(tmp_path / "results.sqlite3"))  # the default 2 s window
    _, pending = cache.lookup_encoded(str(path), options)
    assert pending is not None
    cache.store_encoded(pending, encoded, opened=Opened(identity, 2, changed + 10**9))
    assert cache.stored == 0
    cache.store_encoded(pending, encoded, opened=Opened(identity, 2, changed + 3 * 10**9))
    assert cache.stored == 1
    cache.close()
