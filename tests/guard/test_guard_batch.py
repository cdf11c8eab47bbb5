"""Answering many opens at once: one writev() per read, the guard under concurrent openers, and
the cached path with busy polling.

The fanotify tests need root (a private tmpfs, see conftest); the openers are real processes.
The cached-path test drives the event thread through a socket pair and needs neither.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from codeintegrity.guard import fanotify as fan
from codeintegrity.guard.cache import Verdict, file_version
from codeintegrity.guard.pending import GuardConfig
from codeintegrity.guard.rules import RulesConfig, build_rules
from codeintegrity.guard.service import Guard
from codeintegrity.guard.settings import load_settings
from codeintegrity.report import Report, Status
from tests.guard.conftest import FIXTURE_TRUST, GOOD

# One opener: open PATH COUNT times, print how many opens succeeded and how many got EPERM.
_OPENER = """
import os, sys
ok = denied = 0
for _ in range(int(sys.argv[2])):
    try:
        os.close(os.open(sys.argv[1], os.O_RDONLY))
        ok += 1
    except PermissionError:
        denied += 1
print(ok, denied)
"""


def _read_permission_events(group: int, wanted: int) -> list[tuple[int, int, int]]:
    events: list[tuple[int, int, int]] = []
    poller = select.poll()
    poller.register(group, select.POLLIN)
    while len(events) < wanted:
        assert poller.poll(30_000), f"only {len(events)} of {wanted} opens reached the group"
        records = fan.event_records(os.read(group, 65536))
        events += [e for e in records if e[0] & fan.PERMISSION_EVENTS]
    return events


def test_write_responses_answers_a_batch_and_sets_a_refused_answer_aside(tree: Path):
    group = fan.open_group(nonblocking=True)
    openers: list[subprocess.Popen[str]] = []
    try:
        fan.fanotify_mark(group, fan.FAN_MARK_ADD | fan.FAN_MARK_FILESYSTEM, fan.FAN_OPEN_PERM,
                          str(tree))  # fmt: skip
        openers = [
            subprocess.Popen(
                [sys.executable, "-c", _OPENER, str(tree / "good.exe"), "1"],
                stdout=subprocess.PIPE,
                text=True,
            )  # fmt: skip
            for _ in range(3)
        ]
        events = _read_permission_events(group, 3)
        denied_pid = events[1][2]
        stranger = os.open(os.devnull, os.O_RDONLY)  # an fd no open waits on: refused
        answered = [
            (events[0][1], True),
            (stranger, True),
            (events[1][1], False),
            (events[2][1], True),
        ]
        answers = [fan.response_bytes(fd, allow) for fd, allow in answered]
        refused = fan.write_responses(group, answers)
        assert [(answered[i][0], e.errno) for i, e in refused] == [(stranger, errno.ENOENT)]
        os.close(stranger)
        for _mask, fd, _pid in events:
            os.close(fd)
        results = {p.pid: p.communicate(timeout=30)[0].split() for p in openers}
    finally:
        os.close(group)  # the kernel allows anything still waiting
        for process in openers:
            process.wait(30)
    assert results.pop(denied_pid) == ["0", "1"]
    assert list(results.values()) == [["1", "0"], ["1", "0"]]


@pytest.mark.parametrize("busy_poll", ["0", "300"])
def test_concurrent_openers_get_every_answer_and_every_count(
    tree: Path, start_guard, busy_poll: str
):
    guard = start_guard([tree], "--mode", "enforce", "--busy-poll-us", busy_poll, *FIXTURE_TRUST)
    opens = 60
    openers = [
        subprocess.Popen(
            [sys.executable, "-c", _OPENER, str(tree / name), str(opens)],
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for name in ("good.exe", "tampered.exe") * 3
    ]
    outcomes = [p.communicate(timeout=120)[0].split() for p in openers]
    assert outcomes == [[str(opens), "0"], ["0", str(opens)]] * 3
    assert guard.wait_for_event(5038)
    assert guard.stop() == 0
    # Every open was answered once and counted once, whether from a batch or a worker.
    assert f"allowed: {3 * opens}\n" in guard.output
    assert f"denied: {3 * opens}\n" in guard.output
    assert "errors: 0\n" in guard.output and "read_errors: 0\n" in guard.output


def test_busy_poll_setting_is_range_checked(tmp_path: Path):
    config = tmp_path / "guard.toml"
    config.write_text('paths = ["/srv"]\nbusy_poll_us = 200\n')
    assert load_settings((), {"config_file": str(config)}).busy_poll_us == 200
    assert load_settings(("/srv",), {}).busy_poll_us == 100
    config.write_text('paths = ["/srv"]\nbusy_poll_us = 20000\n')
    with pytest.raises(ValueError, match="busy_poll_us must be between 0 and 10000"):
        load_settings((), {"config_file": str(config)})


class _FakeGroup:
    """A datagram socket pair standing in for the fanotify group (no root needed): the test
    writes event records into one end, the guard reads them from and answers into the other."""

    def __init__(self) -> None:
        self.guard_end, self.kernel_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.guard_end.setblocking(False)

    def send_open(self, fd: int, pid: int = 4242) -> None:
        self.kernel_end.send(struct.pack("=IBBHQii", 24, 3, 0, 24, fan.FAN_OPEN_PERM, fd, pid))

    def answers(self) -> list[tuple[int, int]]:
        self.kernel_end.setblocking(False)
        out = []
        while True:
            try:
                data = self.kernel_end.recv(64)
            except BlockingIOError:
                return out
            out.append(struct.unpack("=iI", data))


@pytest.mark.parametrize(("slept", "spins"), [(1.0, False), (0.0, True)])
def test_cached_open_is_answered_and_busy_polling_follows_the_last_sleep(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, slept: float, spins: bool
):
    exe = tmp_path / "app.exe"
    exe.write_bytes(GOOD.read_bytes())
    config = RulesConfig(mode="enforce")
    guard = Guard(GuardConfig(paths=(str(tmp_path),), busy_poll_us=2000), build_rules(config),
                  config, None, log=print)  # fmt: skip
    group = _FakeGroup()
    guard._fan = group.guard_end.fileno()
    base = os.open(exe, os.O_RDONLY)
    verdict = Verdict(allow=False, report=Report(path=str(exe), status=Status.INVALID))
    guard.cache.put(file_version(os.fstat(base)), guard.rules.fingerprint, verdict)
    event_fd = os.dup(base)
    group.send_open(event_fd)
    reads = []
    real_read = os.read

    def counting_read(fd: int, size: int) -> bytes:
        reads.append(fd)
        return real_read(fd, size)

    monkeypatch.setattr(os, "read", counting_read)
    guard._serve_events(slept)
    monkeypatch.undo()
    assert group.answers() == [(event_fd, fan.FAN_DENY)]  # the cached verdict, one answer
    with pytest.raises(OSError):
        os.fstat(event_fd)  # the event's fd was closed once answered
    assert guard.stats.denied == 1 and guard.cache.counters.hits == 1
    # After a long sleep the thread goes back to poll() at once; after a short one it keeps
    # reading for the window (2 ms here) before it does.
    assert (len(reads) > 1) is spins
    os.close(base)
