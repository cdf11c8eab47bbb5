"""The CLI contract of `verify` (exit codes, one JSON object per path, streaming, interruption),
each clause driven through a real process on real files."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from codeintegrity.cli import exit_codes

from ..conftest import FIXTURES, PKI

ANCHORS = ["--no-default-trust", "--trust", str(PKI / "ca.pem"), "--trust", str(PKI / "tsaca.pem")]
GOOD = FIXTURES / "t64_sha256.exe"  # valid under ANCHORS
BAD = FIXTURES / "bad_flip_text.exe"  # image hash broken (5038, 6281)


def command(*args: str) -> list[str]:
    # --sorted: these tests read outcomes in input order (with any number of workers).
    return [sys.executable, "-m", "codeintegrity", "verify", "--sorted", *args]


def run(*args: str, home, env_extra=None, without_dac=False, input=None):
    env = dict(os.environ, CODEINTEGRITY_HOME=str(home), **(env_extra or {}))
    return subprocess.run(
        [*(_drop_dac() if without_dac else []), *command(*args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
        input=input,
    )


def objects(result) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def no_traceback(result) -> None:
    assert "Traceback" not in result.stderr, result.stderr


def _drop_dac() -> list[str]:
    """A prefix that makes mode-000 files unreadable to the command: root reads everything, so
    as root the command runs without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (setpriv)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv (util-linux): cannot make a file unreadable")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--"]


def write_policy(tmp_path, mode: str, extra: str = "") -> str:
    path = tmp_path / f"{mode}.toml"
    path.write_text(f'name = "t"\nid = "t-1"\nmode = "{mode}"\n{extra}')
    return str(path)


def deny_good(tmp_path, mode: str) -> str:
    flat = hashlib.sha256(GOOD.read_bytes()).hexdigest()
    auth = "a8a853fb3edad9644a94b5a2c1ebdb904bfbc1ff8bab3fa182911a3e4ace9035"
    rules = (
        "[deny]\nhashes = [\n"
        f'  {{ hash = "{auth}", name = "Known bad driver" }},\n'
        f'  {{ hash = "{flat}", name = "Known bad driver" }},\n]\n'
    )
    return write_policy(tmp_path, mode, rules)


# --- 1: audit mode does not hide a tampered file ------------------------------------------------


def test_audit_policy_tampered_file_exits_1(tmp_path):
    policy = write_policy(tmp_path, "audit")
    result = run(
        "--json", "--no-store", *ANCHORS, "--policy", policy, str(GOOD), str(BAD), home=tmp_path
    )
    no_traceback(result)
    assert result.returncode == exit_codes.NOT_VALID
    assert [o["status"] for o in objects(result)] == ["valid", "invalid"]


def test_audit_denial_of_a_valid_file_keeps_exit_0_enforce_does_not(tmp_path):
    audit = run(
        "--no-store", *ANCHORS, "--policy", deny_good(tmp_path, "audit"), str(GOOD), home=tmp_path
    )
    assert audit.returncode == exit_codes.OK, audit.stderr
    assert "1 would be denied (audit)" in audit.stdout
    enforce = run(
        "--no-store", *ANCHORS, "--policy", deny_good(tmp_path, "enforce"), str(GOOD), home=tmp_path
    )
    assert enforce.returncode == exit_codes.NOT_VALID
    assert "policy: 1 denied" in enforce.stdout


# --- 2, 3: the walk reports what it does not judge ----------------------------------------------


@pytest.fixture
def hostile_tree(tmp_path):
    root = tmp_path / "tree"
    (root / "sub").mkdir(parents=True)
    shutil.copyfile(GOOD, root / "sub" / "good.exe")
    (root / "notes.txt").write_text("not a PE")
    os.symlink(root / "missing.exe", root / "dangling.exe")
    os.symlink(root / "loop2.exe", root / "loop1.exe")
    os.symlink(root / "loop1.exe", root / "loop2.exe")
    os.symlink(root / "sub", root / "linked-dir")
    os.symlink(root / "sub" / "good.exe", root / "link-to-file.exe")
    return root


def test_walk_reports_dangling_links_loops_and_directory_links(tmp_path, hostile_tree):
    result = run("--json", "--no-store", *ANCHORS, str(hostile_tree), home=tmp_path)
    no_traceback(result)
    assert result.returncode == exit_codes.OK, result.stderr
    by_path = {os.path.relpath(o["path"], hostile_tree): o for o in objects(result)}
    assert by_path["sub/good.exe"]["status"] == "valid"
    assert by_path["link-to-file.exe"]["status"] == "valid"  # symlinks to files are judged
    assert by_path["dangling.exe"]["reason"] == "dangling-link"
    assert by_path["loop1.exe"]["reason"] == by_path["loop2.exe"]["reason"] == "symlink-loop"
    assert by_path["linked-dir"] == {
        "path": str(hostile_tree / "linked-dir"),
        "status": "skipped",
        "reason": "symlinked-directory",
        "message": "symbolic link to a directory, not entered",
    }
    assert "notes.txt" not in by_path  # not a PE: not an input of the contract
    assert len(by_path) == 6
    for name in ("dangling.exe", "loop1.exe", "loop2.exe", "linked-dir"):
        assert f"skipped {hostile_tree / name}: " in result.stderr
    table = run("--no-store", *ANCHORS, str(hostile_tree), home=tmp_path)
    assert "6 files: 2 valid, 4 skipped" in table.stdout


def test_follow_dir_links_detects_the_loop(tmp_path, hostile_tree):
    os.symlink(hostile_tree, hostile_tree / "sub" / "up")
    result = run(
        "--json", "--no-store", "--follow-dir-links", *ANCHORS, str(hostile_tree), home=tmp_path
    )
    no_traceback(result)
    loops = [o for o in objects(result) if o.get("reason") == "directory-loop"]
    # up -> the tree's root, met twice: under sub and under linked-dir (-> sub)
    assert [os.path.relpath(o["path"], hostile_tree) for o in loops] == ["linked-dir/up", "sub/up"]
    valid = sorted(
        os.path.relpath(o["path"], hostile_tree) for o in objects(result) if o["status"] == "valid"
    )
    assert valid == ["link-to-file.exe", "linked-dir/good.exe", "sub/good.exe"]


def test_unreadable_directory_exits_3_and_the_rest_is_judged(tmp_path):
    root = str(tmp_path / "tree")
    os.makedirs(os.path.join(root, "closed"))
    shutil.copyfile(GOOD, os.path.join(root, "good.exe"))
    shutil.copyfile(GOOD, os.path.join(root, "closed", "hidden.exe"))
    os.chmod(os.path.join(root, "closed"), 0)
    result = run(
        "--json", "--no-store", "--no-cache", *ANCHORS, root, home=tmp_path, without_dac=True
    )
    no_traceback(result)
    assert result.returncode == exit_codes.UNREADABLE, result.stderr
    closed, good = objects(result)
    assert closed["path"] == os.path.join(root, "closed") and closed["status"] == "error"
    assert closed["error"]["errno"] == 13
    assert good["status"] == "valid"


def _deep_tree(top: str, depth: int) -> str:
    """A chain of directories longer than PATH_MAX, built through descriptors; returns the
    full path of the deepest directory."""
    name = "d" * 200
    fd = os.open(top, os.O_RDONLY)
    path = top
    try:
        for _ in range(depth):
            os.mkdir(name, dir_fd=fd)
            child = os.open(name, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = child
            path = os.path.join(path, name)
        data = GOOD.read_bytes()
        out = os.open("deep.exe", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(out, data)
        os.close(out)
    finally:
        os.close(fd)
    return path


def _remove_deep(top: str) -> None:
    # shutil.rmtree works with descriptors too (it is fd-based on Linux).
    shutil.rmtree(top)


def test_over_long_path_is_one_error_and_the_others_are_judged(tmp_path):
    top = tmp_path / "deep"
    top.mkdir()
    shutil.copyfile(GOOD, top / "a.exe")
    deepest = _deep_tree(str(top), 25)  # 25 * 201 > 4096
    long_file = os.path.join(deepest, "deep.exe")
    result = run("--json", "--no-store", *ANCHORS, str(top), long_file, str(GOOD), home=tmp_path)
    no_traceback(result)
    assert result.returncode == exit_codes.UNREADABLE
    got = objects(result)
    assert [o["status"] for o in got] == ["valid", "error", "error", "valid"]
    assert got[1]["path"] == long_file and got[1]["error"]["errno"] == 36  # found by the walk
    assert got[2]["path"] == long_file and got[2]["error"]["errno"] == 36  # named directly
    _remove_deep(str(top))


# --- 4: unreadable arguments ---------------------------------------------------------------------


def test_unreadable_file_argument_exits_3_and_the_other_is_judged(tmp_path):
    shared_dir = str(tmp_path)
    closed = os.path.join(shared_dir, "noread.exe")
    shutil.copyfile(GOOD, closed)
    os.chmod(closed, 0)
    good = os.path.join(shared_dir, "good.exe")
    shutil.copyfile(GOOD, good)
    os.chmod(good, 0o644)
    result = run(
        "--json",
        "--no-store",
        "--no-cache",
        *ANCHORS,
        closed,
        good,
        home=tmp_path,
        without_dac=True,
    )
    no_traceback(result)
    assert result.returncode == exit_codes.UNREADABLE, result.stderr
    error, valid = objects(result)
    assert error["status"] == "error" and error["error"]["errno"] == 13
    assert valid["status"] == "valid"


@pytest.mark.parametrize("option", ["--policy", "--trust", "--catalog", "--store"])
def test_unreadable_configuration_file_exits_4(tmp_path, option):
    shared_dir = str(tmp_path)
    closed = os.path.join(shared_dir, "closed.cfg")
    with open(closed, "w") as handle:
        handle.write("x")
    os.chmod(closed, 0)
    good = os.path.join(shared_dir, "good.exe")
    shutil.copyfile(GOOD, good)
    os.chmod(good, 0o644)
    result = run(
        "--json", "--no-cache", *ANCHORS, option, closed, good, home=shared_dir, without_dac=True
    )
    no_traceback(result)
    assert result.returncode == exit_codes.CONFIG, result.stderr
    assert result.stdout == "" and "closed.cfg" in result.stderr


def test_directory_as_store_exits_4(tmp_path):
    result = run("--json", *ANCHORS, "--store", str(tmp_path), str(GOOD), home=tmp_path)
    no_traceback(result)
    assert result.returncode == exit_codes.CONFIG and result.stdout == ""


# --- 6: JSON consumers can count ----------------------------------------------------------------


def test_json_with_events_on_stdout_is_a_usage_error(tmp_path):
    for fmt in ("--json", "--csv"):
        result = run(fmt, "--events", "-", str(GOOD), home=tmp_path)
        assert result.returncode == exit_codes.USAGE
        assert "cannot share stdout" in result.stderr and result.stdout == ""


# --- 7: streaming, Ctrl-C, closed pipe -----------------------------------------------------------


def _streaming_process(tmp_path, *args: str) -> subprocess.Popen:
    env = dict(os.environ, CODEINTEGRITY_HOME=str(tmp_path))
    return subprocess.Popen(
        command("--json", "--no-store", *ANCHORS, "--files-from", "-", *args),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )


def test_results_stream_and_sigint_exits_130_with_what_was_judged(tmp_path):
    proc = _streaming_process(tmp_path)
    try:
        proc.stdin.write(f"{GOOD}\n".encode())
        proc.stdin.flush()
        # The first result arrives while the list is still open: results are streamed.
        first = json.loads(proc.stdout.readline())
        assert first["path"] == str(GOOD) and first["status"] == "valid"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == exit_codes.INTERRUPTED
    assert out == b""  # nothing more, nothing lost
    assert b"Traceback" not in err
    assert b"interrupted after 1 of 1 files (1 file: 1 valid)" in err


def test_closed_pipe_ends_quietly_with_141(tmp_path):
    proc = _streaming_process(tmp_path)
    try:
        proc.stdin.write(f"{GOOD}\n".encode())
        proc.stdin.flush()
        json.loads(proc.stdout.readline())
        proc.stdout.close()  # the reader goes away, as `| head -1` does
        proc.stdin.write(f"{GOOD}\n".encode())
        proc.stdin.close()
        err = proc.stderr.read()
        proc.wait(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == exit_codes.BROKEN_PIPE
    assert err == b"", err


# --- 8: the summary counts decisions; the table names a rule once --------------------------------


def test_summary_counts_decisions_and_the_rule_is_named_once(tmp_path):
    policy = deny_good(tmp_path, "enforce")
    result = run(
        "--no-store",
        "--flat-hash",
        "sha256",
        *ANCHORS,
        "--policy",
        policy,
        str(GOOD),
        str(BAD),
        home=tmp_path,
    )
    assert result.returncode == exit_codes.NOT_VALID
    assert result.stdout.count("Known bad driver") == 1
    assert "2 files: 1 valid, 1 invalid; policy: 2 denied" in result.stdout
    # The tampered file's signature errors are listed once, not again as policy reasons.
    assert "policy enforce: image hash" not in result.stdout
    assert result.stdout.count("5038 image hash does not match the signature") == 1


# --- 11 (verify side): a default store that cannot be opened ------------------------------------


def test_default_store_that_cannot_be_opened_is_a_warning(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = run(*ANCHORS, "--no-cache", str(GOOD), home=blocker / "home")
    no_traceback(result)
    assert result.returncode == exit_codes.OK
    assert "--no-store" in result.stderr and "CODEINTEGRITY_HOME" in result.stderr
    assert "events were not recorded" in result.stderr
    assert "1 file: 1 valid" in result.stdout


# --- exit 6: events that could not be delivered --------------------------------------------------


def _closed_port() -> int:
    """A loopback TCP port with nothing listening (bound once, then released)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_lost_events_exit_6_unless_best_effort(tmp_path):
    # A collector that is down for the whole run: its events are queued, retried, then lost.
    sink = f"syslog+tcp://127.0.0.1:{_closed_port()}"
    args = ["--no-store", *ANCHORS, "--events", sink, str(BAD), str(GOOD)]
    only_good = ["--no-store", *ANCHORS, "--events", sink, str(GOOD)]
    lost = run(*only_good, home=tmp_path)
    no_traceback(lost)
    assert lost.returncode == exit_codes.EVENTS_LOST, lost.stderr
    assert "discarded" in lost.stderr
    assert run(*only_good, "--events-best-effort", home=tmp_path).returncode == exit_codes.OK
    # A file that is not valid outranks lost events.
    assert run(*args, home=tmp_path).returncode == exit_codes.NOT_VALID


# --- 14: conflicting page-hash options -----------------------------------------------------------


def test_page_hash_options_conflict(tmp_path):
    result = run(
        "--require-page-hashes", "--require-page-hashes-for", "drivers", str(GOOD), home=tmp_path
    )
    assert result.returncode == exit_codes.USAGE and "conflict" in result.stderr
    same = run(
        "--no-store",
        *ANCHORS,
        "--require-page-hashes",
        "--require-page-hashes-for",
        "all",
        str(GOOD),
        home=tmp_path,
    )
    assert same.returncode == exit_codes.NOT_VALID  # agreeing options are fine (6281)


# --- what users expect ---------------------------------------------------------------------------


def test_table_fits_columns_and_shows_root_and_hashes(tmp_path):
    long_dir = tmp_path / ("x" * 90)
    long_dir.mkdir()
    target = long_dir / "good.exe"
    shutil.copyfile(GOOD, target)
    result = run(
        "--no-store",
        *ANCHORS,
        "--hash",
        "sha1",
        str(target),
        str(BAD),
        home=tmp_path,
        env_extra={"COLUMNS": "60"},
    )
    lines = result.stdout.splitlines()
    assert lines[0] == f"valid     {target}"  # the path is never broken
    assert f"invalid   {BAD}" in lines
    details = [line for line in lines[:-1] if line.startswith("    ")]
    assert len(details) == len(lines) - 3 and all(len(line) <= 60 for line in details), lines
    body = " ".join(line.strip() for line in lines)
    assert "root: Throwaway Test Code Signing Root CA" in body
    sha1 = hashlib.sha1(b"").hexdigest()
    assert "authenticode sha1: " in body and sha1 not in body
    assert lines[-1] == "2 files: 1 valid, 1 invalid"


def test_only_failures_quiet_and_csv(tmp_path):
    paths = [str(GOOD), str(BAD), str(tmp_path / "missing.exe")]
    only = run("--no-store", *ANCHORS, "--only-failures", *paths, home=tmp_path)
    assert only.returncode == exit_codes.UNREADABLE
    assert str(GOOD) not in only.stdout and str(BAD) in only.stdout and "missing.exe" in only.stdout
    quiet = run("--no-store", *ANCHORS, "--quiet", *paths, home=tmp_path)
    assert quiet.returncode == exit_codes.UNREADABLE
    assert quiet.stdout == "" and quiet.stderr == ""
    table = run("--no-store", *ANCHORS, "--csv", *paths, home=tmp_path)
    rows = list(csv.DictReader(io.StringIO(table.stdout)))
    assert [r["status"] for r in rows] == ["valid", "invalid", "error"]
    good = rows[0]
    assert good["signer"].endswith("CN=Throwaway Test Publisher")
    assert good["root"].endswith("CN=Throwaway Test Code Signing Root CA")
    assert good["authenticode_sha256"] == (
        "a8a853fb3edad9644a94b5a2c1ebdb904bfbc1ff8bab3fa182911a3e4ace9035"
    )
    assert good["timestamp"] == "" and good["events"] == ""
    assert rows[1]["events"] == "5038 6281" and "image hash" in rows[1]["reasons"]
    assert rows[2]["reasons"] == "No such file or directory"


@pytest.mark.parametrize("separator", ["\n", "\0"])
def test_files_from_newline_or_nul(tmp_path, separator):
    odd = tmp_path / "name with\nnewline.exe" if separator == "\0" else tmp_path / "a b.exe"
    shutil.copyfile(GOOD, odd)
    listing = separator.join([str(odd), str(BAD)]) + separator
    result = run(
        "--json", "--no-store", *ANCHORS, "--files-from", "-", home=tmp_path, input=listing
    )
    assert [o["path"] for o in objects(result)] == [str(odd), str(BAD)]
    assert result.returncode == exit_codes.NOT_VALID
    missing = run("--files-from", str(tmp_path / "nope.txt"), home=tmp_path)
    assert missing.returncode == exit_codes.CONFIG and "nope.txt" in missing.stderr


def test_version():
    result = subprocess.run(
        [sys.executable, "-m", "codeintegrity", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    from codeintegrity import __version__

    assert (
        result.returncode == 0 and result.stdout.strip() == f"codeintegrity, version {__version__}"
    )


# --- --report: the HTML report of this run --------------------------------------------------------


def test_report_option_writes_the_run_and_keeps_the_exit_status(tmp_path):
    out = tmp_path / "run.html"
    result = run("--no-store", *ANCHORS, "--report", str(out), str(BAD), str(GOOD), home=tmp_path)
    no_traceback(result)
    assert result.returncode == exit_codes.NOT_VALID, result.stderr
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "bad_flip_text.exe" in page
    # No network resources: the page is self-contained.
    assert "http://" not in page.replace("http://www.w3.org", "") and "https://" not in page


def test_report_option_into_a_missing_folder_is_exit_4_before_judging(tmp_path):
    result = run(
        "--no-store",
        *ANCHORS,
        "--report",
        str(tmp_path / "no" / "r.html"),
        str(GOOD),
        home=tmp_path,
    )
    no_traceback(result)
    assert result.returncode == exit_codes.CONFIG
    assert result.stderr.count("\n") == 1 and "does not exist" in result.stderr
    assert result.stdout == ""


# --- --nt-path: events name files as Windows does -------------------------------------------------


def test_nt_path_maps_param1_of_the_events(tmp_path):
    import shutil

    mount = tmp_path / "mnt"
    (mount / "Windows").mkdir(parents=True)
    shutil.copy(BAD, mount / "Windows" / "bad.exe")
    events = tmp_path / "events.xml"
    result = run(
        "--no-store",
        *ANCHORS,
        "--events",
        f"xml:{events}",
        "--nt-path",
        f"{mount}=\\Device\\HarddiskVolume3",
        str(mount / "Windows" / "bad.exe"),
        home=tmp_path,
    )
    no_traceback(result)
    assert result.returncode == exit_codes.NOT_VALID
    text = events.read_text(encoding="utf-8")
    assert '<Data Name="param1">\\Device\\HarddiskVolume3\\Windows\\bad.exe</Data>' in text


def test_nt_path_that_is_not_a_mapping_is_a_usage_error(tmp_path):
    result = run("--no-store", "--nt-path", "bogus", str(GOOD), home=tmp_path)
    assert result.returncode == exit_codes.USAGE and "--nt-path" in result.stderr


def test_json_report_carries_version_info(tmp_path):
    import json

    from codeintegrity.cli.verify_cmd import DEMO_SAMPLE as demo

    from ..conftest import SHARED_CORPUS

    vsce = SHARED_CORPUS / "samples" / "signed"
    found = sorted(vsce.rglob("vsce-sign.exe")) if vsce.is_dir() else []
    result = run("--no-store", "--json", str(demo), *map(str, found), home=tmp_path)
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert "version_info" in lines[0]  # present in the contract, null when the file has none
    if found:
        info = lines[1]["version_info"]
        assert info["original_file_name"] == "vsce-sign.dll" and info["file_version"] == "2.0.6.0"
