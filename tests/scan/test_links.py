"""Files with more than one name in one run: judged once, each name reported on its own."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace

import pytest

from codeintegrity import verify as engine
from codeintegrity.options import VerifyOptions
from codeintegrity.policy.load import parse_policy
from codeintegrity.scan.links import LinkedFiles
from codeintegrity.scan.outcome import Judged, encode_report, outcome_dict
from codeintegrity.scan.pool import parallel_scan
from codeintegrity.scan.run import Judge, scan
from codeintegrity.scan.walk import Target, file_identity, walk

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

    def counted(path, options):
        judged.append(path)
        return real(path, options)

    monkeypatch.setattr(engine, "verify_path", counted)
    return judged


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
        "to_linked.exe": identity,  # a symbolic link to a file with two names
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


def test_what_is_not_kept(tmp_path, fixture_trust):
    path = _two_names(tmp_path)
    identity = file_identity(path.stat())
    encoded = encode_report(engine.verify_path(str(path), VerifyOptions(trust=fixture_trust)))
    clock = [identity[4] + 10**10]  # ten seconds after the last change
    linked = LinkedFiles(clock_ns=lambda: clock[0])
    linked.keep(identity, str(path), encoded)
    assert linked.get(identity, fixed_time=False) is encoded
    # A primitive that raised may work next time.
    fresh = LinkedFiles(clock_ns=lambda: clock[0])
    fresh.keep(identity, str(path), replace(encoded, storable=False))
    assert fresh.get(identity, fixed_time=False) is None
    # Changed within the racy window (one second before the clock).
    racy = LinkedFiles(clock_ns=lambda: identity[4] + 10**9)
    racy.keep(identity, str(path), encoded)
    assert racy.get(identity, fixed_time=False) is None
    # The file changed after the walk stat'ed it.
    path.write_bytes(path.read_bytes() + b"\0")
    changed = LinkedFiles(clock_ns=lambda: clock[0] + 10**10)
    changed.keep(identity, str(path), encoded)
    assert changed.get(identity, fixed_time=False) is None


def test_an_entry_goes_once_every_other_name_was_met(tmp_path, fixture_trust):
    path = _two_names(tmp_path)
    os.link(path, tmp_path / "a.exe.3")  # three names: two more to meet after the first
    identity = file_identity(path.stat())
    encoded = encode_report(engine.verify_path(str(path), VerifyOptions(trust=fixture_trust)))
    linked = LinkedFiles(clock_ns=lambda: identity[4] + 10**10)
    linked.keep(identity, str(path), encoded)
    assert linked.get(identity, fixed_time=True) is encoded
    assert linked.get(identity, fixed_time=True) is encoded
    assert linked.get(identity, fixed_time=True) is None
    assert linked.reused == 2


def test_a_verdict_past_its_chain_boundary_is_not_reused(tmp_path, fixture_trust):
    path = _two_names(tmp_path)
    for more in ("a.exe.3", "a.exe.4"):  # names enough for three lookups
        os.link(path, tmp_path / more)
    identity = file_identity(path.stat())
    report = engine.verify_path(str(path), VerifyOptions(trust=fixture_trust))
    bounded = replace(encode_report(report), boundary=2_000_000_000.0)
    now = [int(1_999_999_999 * 1e9)]
    linked = LinkedFiles(clock_ns=lambda: now[0])
    linked.keep(identity, str(path), bounded)
    assert linked.get(identity, fixed_time=False) is bounded
    now[0] = int(2_000_000_001 * 1e9)
    assert linked.get(identity, fixed_time=True) is bounded  # --at: no boundary moves it
    assert linked.get(identity, fixed_time=False) is None


def test_the_oldest_go_first_past_the_byte_bound(tmp_path):
    encoded = encode_report(engine.verify_path(str(SIGNED), VerifyOptions()))
    files = []
    for name in ("a.exe", "b.exe", "c.exe"):
        path = _two_names(tmp_path, name)
        files.append((file_identity(path.stat()), str(path)))
    linked = LinkedFiles(2 * len(encoded.text), clock_ns=lambda: 10**30)  # room for two
    for identity, path in files:
        linked.keep(identity, path, encoded)
    assert [linked.get(i, fixed_time=True) is not None for i, _ in files] == [False, True, True]


def test_cli_reports_every_name(tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    paths = _linked_tree(tree, 3)
    out = subprocess.run(
        [sys.executable, "-m", "codeintegrity", "verify", "--json", "--no-store", "--no-cache",
         "--no-default-trust", "--trust", str(PKI / "ca.pem"), "--trust", str(PKI / "tsaca.pem"),
         "--sorted", str(tree)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [d["path"] for d in lines] == paths
    assert {d["status"] for d in lines} == {"valid"}


@pytest.mark.parametrize("jobs", [1, 2])
def test_targets_named_twice_by_path_are_not_linked(jobs, fixture_trust):
    # The same path named twice is one name: nothing to reuse, both judged.
    targets = [Target(str(SIGNED)), Target(str(SIGNED))]
    judge = Judge(VerifyOptions(trust=fixture_trust))
    got = list(parallel_scan(targets, judge, jobs) if jobs > 1 else scan(targets, judge))
    assert len(got) == 2 and judge.linked.reused == 0
