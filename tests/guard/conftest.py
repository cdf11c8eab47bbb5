"""Harness for guard tests: a private tmpfs, and the guard really started as a subprocess.

Safety: the guard marks only the tmpfs mounted here (FAN_MARK_FILESYSTEM on a filesystem that
nothing else uses), timeouts are short, and every guard is SIGKILLed in teardown (the kernel then
allows whatever was pending), so a broken guard cannot gate anything else on the machine.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, PKI

GOOD = FIXTURES / "t64_sha256.exe"
TAMPERED = FIXTURES / "bad_flip_text.exe"
FIXTURE_TRUST = (
    "--no-default-trust",
    "--trust",
    str(PKI / "ca.pem"),
    "--trust",
    str(PKI / "tsaca.pem"),
)


def fanotify_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "guard tests need root (fanotify permission events)"
    from codeintegrity.guard.fanotify import probe

    reason = probe()
    return f"fanotify permission events unavailable: {reason}" if reason else None


@pytest.fixture
def need_fanotify() -> None:
    reason = fanotify_unavailable()
    if reason:
        print(f"SKIP: {reason}")
        pytest.skip(reason)


@pytest.fixture
def tree(need_fanotify: None) -> Iterator[Path]:
    """A tmpfs of our own holding good.exe, tampered.exe and note.txt, mounted where an
    unprivileged server (smbd's guest) can reach it (pytest's tmp directories are 0700)."""
    base = Path(tempfile.mkdtemp(prefix="ci-guard-tree-"))
    base.chmod(0o755)
    mnt = base / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(mnt)], check=True)
    try:
        shutil.copyfile(GOOD, mnt / "good.exe")
        shutil.copyfile(TAMPERED, mnt / "tampered.exe")
        (mnt / "note.txt").write_text("not a PE\n")
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
        shutil.rmtree(base, ignore_errors=True)


class GuardProcess:
    """``codeintegrity guard`` in a subprocess; waits for its ``ready`` line."""

    def __init__(self, base: Path, run_dir: Path, paths: list[Path], *extra: str) -> None:
        self.store = base / "events.sqlite"
        self.socket = run_dir / "ctl.sock"
        self.key = base / "guard.key"
        argv = [
            sys.executable, "-m", "codeintegrity", "guard", *map(str, paths),
            "--store", str(self.store), "--timeout", "2",
            "--control-socket", str(self.socket), "--key-file", str(self.key), *extra,
        ]  # fmt: skip
        self.proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._ready.wait(60):
            self.kill()
            raise AssertionError("guard never became ready:\n" + "".join(self.lines))

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            if "ready" in line:
                self._ready.set()
        self._ready.set()  # EOF: the waiter sees the lines

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        code = self.proc.wait(30)
        self._reader.join(5)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    def events(self, event_id: int | None = None) -> list:
        from codeintegrity.events.store import EventStore

        with EventStore(self.store) as store:
            found = list(store.query())
        return [e for e in found if event_id is None or e.event_id == event_id]

    def wait_for_event(self, event_id: int, timeout: float = 20.0) -> list:
        """Events are written by the guard's sink thread: poll the store until one shows."""
        end = time.monotonic() + timeout
        while True:
            found = self.events(event_id)
            if found or time.monotonic() > end:
                return found
            time.sleep(0.1)


@pytest.fixture
def start_guard(tmp_path: Path) -> Iterator:
    started: list[GuardProcess] = []
    # The control socket must be reachable by an unprivileged peer (pytest's tmp is 0700).
    run_dir = Path(tempfile.mkdtemp(prefix="ci-guard-"))
    run_dir.chmod(0o755)

    def start(paths: list[Path], *extra: str) -> GuardProcess:
        guard = GuardProcess(tmp_path, run_dir, paths, *extra)
        started.append(guard)
        return guard

    yield start
    for guard in started:
        guard.kill()
    shutil.rmtree(run_dir, ignore_errors=True)


def cat(path: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["cat", str(path)], capture_output=True, timeout=30)
