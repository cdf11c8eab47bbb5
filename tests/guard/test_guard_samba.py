"""Acceptance: a Samba share guarded in enforce mode (smbd really started on 127.0.0.1)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.guard.conftest import FIXTURE_TRUST, GOOD

SMBD = shutil.which("smbd") or "/usr/sbin/smbd"
SMBCLIENT = shutil.which("smbclient")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def share(tree: Path, tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """smbd serving ``tree`` as //127.0.0.1/share on a free high port, with its own
    configuration and state directories (nothing machine-wide is read or written)."""
    if not os.access(SMBD, os.X_OK) or SMBCLIENT is None:
        reason = "Samba (Debian packages samba, smbclient) is not installed"
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    state = tmp_path / "samba"
    dirs = {name: state / name for name in ("lock", "state", "cache", "private", "pid", "rpc")}
    for path in dirs.values():
        path.mkdir(parents=True)
    port = _free_port()
    conf = state / "smb.conf"
    conf.write_text(
        f"""[global]
  workgroup = WORKGROUP
  server role = standalone server
  map to guest = Bad User
  smb ports = {port}
  interfaces = 127.0.0.1
  bind interfaces only = yes
  disable netbios = yes
  lock directory = {dirs["lock"]}
  state directory = {dirs["state"]}
  cache directory = {dirs["cache"]}
  private dir = {dirs["private"]}
  pid directory = {dirs["pid"]}
  ncalrpc dir = {dirs["rpc"]}
  log file = {state}/log.%m
  load printers = no
  printing = bsd
  printcap name = /dev/null
  disable spoolss = yes
[share]
  path = {tree}
  guest ok = yes
  read only = yes
"""
    )
    smbd = subprocess.Popen(
        [SMBD, "--foreground", "--no-process-group", "-s", str(conf), "--debug-stdout"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # smbd signals its whole process group when it stops
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if smbd.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("smbd did not start") from None
                time.sleep(0.1)
        yield port, conf
    finally:
        smbd.send_signal(signal.SIGTERM)
        try:
            smbd.wait(20)
        except subprocess.TimeoutExpired:
            smbd.kill()
            smbd.wait(20)


def _get(port: int, conf: Path, name: str, dest: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SMBCLIENT or "smbclient", "//127.0.0.1/share", "-p", str(port), "-N", "-s", str(conf),
         "-c", f"get {name} {dest}"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_share_denies_the_tampered_file_to_smb_clients(
    tree: Path, tmp_path: Path, share: tuple[int, Path], start_guard
):
    port, conf = share
    # Without the guard both files are served (so a denial below is the guard's doing).
    assert _get(port, conf, "tampered.exe", tmp_path / "before.out").returncode == 0
    guard = start_guard([tree], "--mode", "enforce", *FIXTURE_TRUST)
    bad = _get(port, conf, "tampered.exe", tmp_path / "tampered.out")
    assert "NT_STATUS_ACCESS_DENIED" in bad.stdout + bad.stderr
    good = _get(port, conf, "good.exe", tmp_path / "good.out")
    assert good.returncode == 0, good.stdout + good.stderr
    assert (tmp_path / "good.out").read_bytes() == GOOD.read_bytes()
    assert guard.stop() == 0
    [event] = guard.events(5038)
    assert event.path == str(tree / "tampered.exe")
    assert Path(str(event.context_value("process.executable"))).name == "smbd"
    assert event.user_id == "S-1-22-1-65534"  # the guest, nobody
    [block] = guard.events(3033)
    assert Path(str(block.value("ProcessNameBuffer"))).name == "smbd"
