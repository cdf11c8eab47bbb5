"""The Dask backend on real clusters: a LocalCluster, and `dask scheduler` / `dask worker`
processes started here. Same results as local worker processes; --path-map; unreachable
scheduler is exit 4."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from codeintegrity.cli import exit_codes

from ..conftest import FIXTURES, PKI
from .procs import children

pytest.importorskip("distributed", reason="the 'dask' extra (distributed) is not installed")

ANCHORS = ["--no-default-trust", "--trust", str(PKI / "ca.pem"), "--trust", str(PKI / "tsaca.pem")]


def verify(*args: str, home) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CODEINTEGRITY_HOME=str(home))
    return subprocess.run(
        [sys.executable, "-m", "codeintegrity", "verify", "--json", "--no-cache", *ANCHORS, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


def results(result) -> list[tuple]:
    out = []
    for line in result.stdout.splitlines():
        o = json.loads(line)
        decision = o.get("decision") or {}
        out.append((o["path"], o["status"], tuple(o.get("event_ids", ())), decision.get("allowed")))
    return out


def test_local_cluster_gives_the_same_results_as_local_workers(tmp_path):
    policy = tmp_path / "p.toml"
    policy.write_text('mode = "audit"\nmin_digest = "sha256"\n')
    common = ["--policy", str(policy), str(FIXTURES)]
    local = verify("--jobs", "2", *common, home=tmp_path)
    dask = verify("--dask", "local:2", *common, home=tmp_path)
    assert "Traceback" not in dask.stderr, dask.stderr
    assert dask.returncode == local.returncode == exit_codes.NOT_VALID
    assert len(results(local)) > 20
    # As finished: the same set, each file once.
    assert sorted(results(dask)) == sorted(results(local))
    assert len(set(results(dask))) == len(results(dask))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dask_cli() -> str:
    path = Path(sys.executable).with_name("dask")
    if not path.exists():
        pytest.skip("the `dask` command is not installed beside this Python")
    return str(path)


def test_scheduler_and_worker_processes_with_a_path_map(tmp_path):
    """A real `dask scheduler` and `dask worker` (as on a cluster); the worker sees the files
    under another prefix (a bind-mount-like copy), mapped with --path-map."""
    client_root = tmp_path / "client-view"
    worker_root = tmp_path / "worker-view"
    client_root.mkdir()
    worker_root.mkdir()
    # The two views hold different bytes under the same names: the verdicts show which view
    # the worker read.
    shutil.copyfile(FIXTURES / "t64_sha256.exe", client_root / "a.exe")
    shutil.copyfile(FIXTURES / "bad_flip_text.exe", client_root / "b.exe")
    shutil.copyfile(FIXTURES / "bad_flip_text.exe", worker_root / "a.exe")
    shutil.copyfile(FIXTURES / "t64_sha256.exe", worker_root / "b.exe")
    port = _free_port()
    dask = _dask_cli()
    env = dict(os.environ, DASK_DISTRIBUTED__WORKER__DAEMON="False")
    scheduler = subprocess.Popen(
        [dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    worker = subprocess.Popen(
        [
            dask,
            "worker",
            f"tcp://127.0.0.1:{port}",
            "--nthreads",
            "1",
            "--nworkers",
            "1",
            "--no-dashboard",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        from distributed import Client

        with Client(f"tcp://127.0.0.1:{port}", timeout="60s") as client:
            client.wait_for_workers(1, timeout=120)
        args = [
            "--dask",
            f"tcp://127.0.0.1:{port}",
            "--sorted",
            "--path-map",
            f"{client_root}={worker_root}",
            str(client_root),
        ]
        result = verify(*args, home=tmp_path)
        assert "Traceback" not in result.stderr, result.stderr
        # Reported under the client's paths, judged from the worker's files.
        assert results(result) == [
            (str(client_root / "a.exe"), "invalid", (5038, 6281), None),
            (str(client_root / "b.exe"), "valid", (), None),
        ]
        plain = verify(
            "--dask", f"tcp://127.0.0.1:{port}", "--sorted", str(client_root), home=tmp_path
        )
        assert [r[1] for r in results(plain)] == ["valid", "invalid"]
    finally:
        for proc in (worker, scheduler):
            proc.terminate()
        for proc in (worker, scheduler):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_unreachable_scheduler_is_exit_4(tmp_path):
    port = _free_port()  # nothing listens there
    result = verify(
        "--dask", f"tcp://127.0.0.1:{port}", str(FIXTURES / "t64_sha256.exe"), home=tmp_path
    )
    assert result.returncode == exit_codes.CONFIG, result.stderr
    assert "cannot reach the Dask scheduler" in result.stderr and result.stdout == ""


def test_ctrl_c_on_a_local_cluster_exits_130_without_tracebacks_or_orphans(tmp_path):
    """Ctrl-C reaches the whole process group, the LocalCluster's workers included: the
    client reports what was judged and closes the cluster; no worker prints a traceback."""
    env = dict(os.environ, CODEINTEGRITY_HOME=str(tmp_path))
    proc = subprocess.Popen(
        [sys.executable, "-m", "codeintegrity", "verify", "--json", "--no-store", "--no-cache",
         *ANCHORS, "--dask", "local:2", "--files-from", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,  # its own process group, as a shell job has
    )  # fmt: skip
    try:
        proc.stdin.write(f"{FIXTURES / 't64_sha256.exe'}\n".encode())
        proc.stdin.flush()
        first = json.loads(proc.stdout.readline())  # the list is still open: more may come
        assert first["status"] == "valid"
        workers = children(proc.pid)
        assert len(workers) >= 2
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == exit_codes.INTERRUPTED, err
    assert out == b"" and b"Traceback" not in err and b"KeyboardInterrupt" not in err, err
    assert b"interrupted after 1 of 1 files" in err
    for pid in workers:
        if os.path.exists(f"/proc/{pid}"):
            with open(f"/proc/{pid}/stat") as handle:  # reaped, or at least not running
                assert handle.read().split(")")[-1].split()[0] in ("Z", "X")


def test_a_scheduler_without_workers_is_exit_4_after_the_wait(tmp_path):
    port = _free_port()
    scheduler = subprocess.Popen(
        [_dask_cli(), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        from distributed import Client

        with Client(f"tcp://127.0.0.1:{port}", timeout="60s"):
            pass  # the scheduler is up (and has no worker)
        target = str(FIXTURES / "t64_sha256.exe")
        result = verify(
            "--dask", f"tcp://127.0.0.1:{port}", "--dask-wait", "1", target, home=tmp_path
        )
        assert result.returncode == exit_codes.CONFIG, result.stderr
        assert "has no worker (waited 1 s)" in result.stderr and result.stdout == ""
        assert "Traceback" not in result.stderr
    finally:
        scheduler.terminate()
        try:
            scheduler.wait(timeout=30)
        except subprocess.TimeoutExpired:
            scheduler.kill()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dask", "local:1", "--dask-wait", "0"], "Invalid value for '--dask-wait'"),
        (["--dask-wait", "5"], "--dask-wait is for --dask"),
    ],
)
def test_dask_wait_bad_values_are_one_line_usage_errors(tmp_path, args, message):
    result = verify(*args, str(FIXTURES / "t64_sha256.exe"), home=tmp_path)
    assert result.returncode == 2 and message in result.stderr and result.stdout == ""
    assert "Traceback" not in result.stderr
