"""`verify` on trees: selection options, --jobs/--sorted through the command, progress and the
end summary."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

from codeintegrity.cli import exit_codes

from ..conftest import FIXTURES, PKI

ANCHORS = ["--no-default-trust", "--trust", str(PKI / "ca.pem"), "--trust", str(PKI / "tsaca.pem")]


def verify(*args: str, home) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CODEINTEGRITY_HOME=str(home))
    return subprocess.run(
        [sys.executable, "-m", "codeintegrity", "verify", "--no-store", *ANCHORS, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def paths(result, root) -> list[str]:
    return [os.path.relpath(json.loads(line)["path"], root) for line in result.stdout.splitlines()]


def _tree(tmp_path):
    root = tmp_path / "tree"
    for rel in ("bin/a.exe", "bin/b.dll", "obj/c.exe", "big/d.exe"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(FIXTURES / "t64_sha256.exe", root / rel)
    with open(root / "big" / "d.exe", "ab") as handle:
        handle.write(b"\0" * 100_000)
    return root


def test_include_exclude_and_max_size(tmp_path):
    root = _tree(tmp_path)
    got = verify(
        "--json", "--sorted", "--include", "*.exe", "--exclude", "obj", str(root), home=tmp_path
    )
    assert paths(got, root) == ["big/d.exe", "bin/a.exe"]
    small = verify("--json", "--sorted", "--max-size", "150K", str(root), home=tmp_path)
    statuses = {
        p: json.loads(line)["status"]
        for p, line in zip(paths(small, root), small.stdout.splitlines(), strict=True)
    }
    assert statuses["big/d.exe"] == "skipped"
    assert json.loads(small.stdout.splitlines()[0])["reason"] == "too-large"
    assert sorted(p for p, s in statuses.items() if s != "skipped") == [
        "bin/a.exe",
        "bin/b.dll",
        "obj/c.exe",
    ]
    bad = verify("--max-size", "lots", str(root), home=tmp_path)
    assert bad.returncode == exit_codes.USAGE


def test_one_file_system_does_not_leave_the_device(tmp_path):
    # /proc is another file system; reached through a directory symlink that is followed.
    root = tmp_path / "tree"
    root.mkdir()
    shutil.copyfile(FIXTURES / "t64_sha256.exe", root / "a.exe")
    os.symlink("/proc/self/fdinfo", root / "elsewhere")
    got = verify("--json", "--follow-dir-links", "--one-file-system", str(root), home=tmp_path)
    objects = [json.loads(line) for line in got.stdout.splitlines()]
    assert {(os.path.basename(o["path"]), o["status"], o.get("reason")) for o in objects} == {
        ("a.exe", "valid", None),
        ("elsewhere", "skipped", "other-file-system"),
    }


def test_progress_forced_prints_the_end_summary(tmp_path):
    root = _tree(tmp_path)
    got = verify("--progress", "--jobs", "2", str(root), home=tmp_path)
    assert got.returncode == exit_codes.NOT_VALID, got.stderr  # d.exe has data appended
    assert "4 judged" in got.stderr and "slowest:" in got.stderr
    assert "events: 5038 x1" in got.stderr
    assert "4 files: 3 valid, 1 invalid" in got.stdout
    quiet = verify(str(root), home=tmp_path)  # stderr is not a terminal: no progress
    assert quiet.stderr == ""


def test_progress_is_on_by_default_on_a_terminal(tmp_path):
    import pty

    root = _tree(tmp_path)
    master, slave = pty.openpty()
    env = dict(os.environ, CODEINTEGRITY_HOME=str(tmp_path), COLUMNS="200")
    proc = subprocess.Popen(
        [sys.executable, "-m", "codeintegrity", "verify", "--no-store", *ANCHORS, str(root)],
        stdout=subprocess.PIPE,
        stderr=slave,
        env=env,
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the terminal's last writer is gone
            break
        if not chunk:
            break
        chunks.append(chunk)
    out, _ = proc.communicate(timeout=120)
    os.close(master)
    terminal = b"".join(chunks).decode(errors="replace")
    assert "files/s" in terminal and "MB/s" in terminal  # the live line
    assert "4 judged" in terminal and "slowest:" in terminal  # the end summary
    assert b"4 files: 3 valid, 1 invalid" in out  # stdout keeps the table, undisturbed
