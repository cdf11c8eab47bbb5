"""Fail mode (timeout, full queue) and readiness, with the guard run in-process on a thread.

The verification is replaced by one that waits for the test's go-ahead, so "slow" is decided by
the test instead of by the clock of a loaded machine.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from codeintegrity.guard.cache import Verdict
from codeintegrity.guard.rules import RulesConfig, build_rules
from codeintegrity.guard.service import Guard, GuardConfig
from tests.conftest import PKI
from tests.guard.conftest import GOOD, cat


@dataclass
class HeldRules:
    """Rules whose verification blocks until ``release`` is set."""

    mode: str
    fingerprint: str
    inner: object
    release: threading.Event
    started: threading.Semaphore

    def judge_fd(self, fd: int, path: str) -> Verdict:
        self.started.release()
        self.release.wait(60)
        return self.inner.judge_fd(fd, path)  # type: ignore[attr-defined]


def _guard(tree: Path, rules: HeldRules, **config: object) -> tuple[Guard, threading.Thread]:
    logged: list[str] = []
    guard = Guard(
        GuardConfig(paths=(str(tree),), **config),  # type: ignore[arg-type]
        rules,  # type: ignore[arg-type]
        RulesConfig(),
        None,
        log=logged.append,
    )
    guard.start()
    thread = threading.Thread(target=guard.run, kwargs={"install_signals": False}, daemon=True)
    thread.start()
    return guard, thread


def _held(mode: str) -> HeldRules:
    config = RulesConfig(
        mode=mode,  # type: ignore[arg-type]
        trust_files=(str(PKI / "ca.pem"), str(PKI / "tsaca.pem")),
        no_default_trust=True,
    )
    inner = build_rules(config)
    return HeldRules(mode, inner.fingerprint, inner, threading.Event(), threading.Semaphore(0))


def _stop(guard: Guard, thread: threading.Thread, rules: HeldRules) -> None:
    rules.release.set()
    if not thread.is_alive():
        return
    guard.request_stop()
    guard.wake()
    thread.join(30)
    assert not thread.is_alive()


def test_timeout_in_enforce_mode_takes_the_on_timeout_answer(tree: Path):
    rules = _held("enforce")
    guard, thread = _guard(tree, rules, timeout=0.3, on_timeout="deny", workers=1)
    try:
        slow = cat(tree / "good.exe")  # valid, but its verdict never comes in time
        assert slow.returncode != 0 and b"Operation not permitted" in slow.stderr
        assert guard.stats.timeouts == 1
        rules.release.set()  # the worker finishes and caches the verdict anyway
        assert rules.started.acquire(timeout=30)
        for _ in range(100):
            if len(guard.cache):
                break
            threading.Event().wait(0.05)
        assert cat(tree / "good.exe").returncode == 0  # answered from the cache
        assert guard.cache.counters.hits == 1
    finally:
        _stop(guard, thread, rules)


def test_full_queue_is_answered_at_once_and_counted(tree: Path):
    for index in range(3):
        shutil.copyfile(GOOD, tree / f"copy{index}.exe")
    rules = _held("enforce")
    guard, thread = _guard(tree, rules, timeout=30, on_timeout="allow", workers=1, queue_size=1)
    openers = []
    try:
        # 1: taken by the only worker (held); 2: waits in the queue (size 1); 3: overflow.
        openers.append(
            subprocess.Popen(["cat", str(tree / "copy0.exe")], stdout=subprocess.DEVNULL)
        )
        assert rules.started.acquire(timeout=30)
        openers.append(
            subprocess.Popen(["cat", str(tree / "copy1.exe")], stdout=subprocess.DEVNULL)
        )
        for _ in range(200):
            if guard.cache.counters.misses == 2 and guard.snapshot()["queue_depth"] == 1:
                break
            threading.Event().wait(0.05)
        overflow = cat(tree / "copy2.exe")
        assert overflow.returncode == 0  # the fail decision (allow) came without a verdict
        assert guard.stats.overflows == 1
        rules.release.set()
        assert [p.wait(30) for p in openers] == [0, 0]
        assert guard.stats.judged == 2
    finally:
        for proc in openers:
            if proc.poll() is None:
                proc.kill()
        _stop(guard, thread, rules)


def test_concurrent_opens_of_one_file_share_one_verification(tree: Path):
    rules = _held("enforce")
    guard, thread = _guard(tree, rules, timeout=30, workers=2)
    openers = []
    try:
        first = subprocess.Popen(["cat", str(tree / "tampered.exe")], stdout=subprocess.DEVNULL)
        openers.append(first)
        assert rules.started.acquire(timeout=30)
        second = subprocess.Popen(["cat", str(tree / "tampered.exe")], stdout=subprocess.DEVNULL)
        openers.append(second)
        for _ in range(200):
            if guard.stats.coalesced:
                break
            threading.Event().wait(0.05)
        assert guard.stats.coalesced == 1
        rules.release.set()
        assert first.wait(30) != 0 and second.wait(30) != 0  # both denied by one verdict
        _stop(guard, thread, rules)  # the worker counts after answering: let it finish
        assert guard.stats.judged == 1 and guard.stats.denied == 2
    finally:
        for proc in openers:
            if proc.poll() is None:
                proc.kill()
        _stop(guard, thread, rules)


def test_readiness_is_notified_to_systemd(tree: Path, tmp_path: Path, start_guard, monkeypatch):
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    address = tmp_path / "notify.sock"
    listener.bind(str(address))
    listener.settimeout(60)
    monkeypatch.setenv("NOTIFY_SOCKET", str(address))
    try:
        guard = start_guard([tree], "--mode", "audit", "--no-default-trust")
        message = listener.recv(4096).decode()
        assert message.startswith("READY=1")
        assert guard.stop() == 0
        assert "STOPPING=1" in listener.recv(4096).decode()
    finally:
        listener.close()


def test_not_root_exits_unavailable():
    if os.geteuid() != 0:
        pytest.skip("already unprivileged: covered by the unit tests")
    import sys
    import tempfile

    public = Path(tempfile.mkdtemp(prefix="ci-guard-public-"))
    public.chmod(0o755)  # the unprivileged guard must see that the path exists
    try:
        result = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable,
             "-m", "codeintegrity", "guard", str(public), "--no-store", "--control-socket",
             "none"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        shutil.rmtree(public, ignore_errors=True)
    assert result.returncode == 69, result.stderr
    assert "not available" in result.stderr


class HeldSink:
    """A sink that stalls until released, as a SIEM that stopped reading would."""

    uri = "test:held"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.written: list = []

    def write(self, events):
        self.release.wait(60)
        self.written.extend(events)
        return events

    def close(self) -> None:
        pass


def test_a_stalled_sink_never_blocks_opens_and_its_losses_raise_4612(tree: Path):
    from codeintegrity.events.build import Host
    from codeintegrity.events.pipeline import EventPipeline

    sink = HeldSink()
    pipeline = EventPipeline([sink], host=Host.current(), queue_size=4, max_block=0.0)
    config = RulesConfig(
        mode="audit",
        trust_files=(str(PKI / "ca.pem"), str(PKI / "tsaca.pem")),
        no_default_trust=True,
    )
    guard = Guard(GuardConfig(paths=(str(tree),)), build_rules(config), config, pipeline)
    guard.start()
    thread = threading.Thread(target=guard.run, kwargs={"install_signals": False}, daemon=True)
    thread.start()
    try:
        # Each open of the tampered file raises 4 events (3089, 3033, 5038, 6281); the sink
        # holds the first batch, its queue takes 4 more events, the rest are dropped.
        for _ in range(5):
            assert cat(tree / "tampered.exe").returncode == 0
        assert guard.snapshot()["events_lost"] > 0
        sink.release.set()
        assert cat(tree / "tampered.exe").returncode == 0
    finally:
        sink.release.set()
        guard.request_stop()
        guard.wake()
        thread.join(30)
    summary = pipeline.close()
    lost = sum(summary.discarded.values())
    assert lost > 0
    notices = [e for e in sink.written if e.event_id == 4612]
    assert notices and sum(int(e.value("AuditsDiscarded")) for e in notices) == lost
