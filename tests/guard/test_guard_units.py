"""Pieces of the guard that need neither root nor fanotify."""

from __future__ import annotations

import os
import socket
import struct
from pathlib import Path

import pytest
from click.testing import CliRunner

from codeintegrity.cli.main import cli
from codeintegrity.guard import fanotify as fan
from codeintegrity.guard.cache import Verdict, VerdictCache
from codeintegrity.guard.control import ControlError, load_key, sign
from codeintegrity.guard.notify import sd_notify
from codeintegrity.guard.opener import Opener, parse_status_uid
from codeintegrity.guard.patterns import PatternMonitor
from codeintegrity.guard.rules import RulesConfig, build_rules
from codeintegrity.guard.settings import load_settings
from codeintegrity.report import Report, Status
from tests.conftest import PKI
from tests.guard.conftest import GOOD, TAMPERED


def _record(mask: int, fd: int, pid: int, *, version: int = 3, extra: int = 0) -> bytes:
    return struct.pack("=IBBHQii", 24 + extra, version, 0, 24, mask, fd, pid) + b"\0" * extra


def test_event_records_reads_consecutive_records():
    data = _record(fan.FAN_OPEN_PERM, 7, 100) + _record(fan.FAN_CLOSE_WRITE, 8, 101, extra=8)
    events = fan.event_records(data)
    assert [(m, fd, pid, bool(m & fan.PERMISSION_EVENTS)) for m, fd, pid in events] == [
        (fan.FAN_OPEN_PERM, 7, 100, True),
        (fan.FAN_CLOSE_WRITE, 8, 101, False),
    ]


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (_record(fan.FAN_OPEN_PERM, 7, 1)[:20], "fanotify_event_metadata"),
        (_record(fan.FAN_OPEN_PERM, 7, 1, version=2), "vers"),
        (struct.pack("=IBBHQii", 16, 3, 0, 24, 1, 7, 1), "event_len"),
        (struct.pack("=IBBHQii", 64, 3, 0, 24, 1, 7, 1), "fanotify event"),
    ],
)
def test_event_records_rejects_bad_records(data: bytes, field: str):
    with pytest.raises(fan.FanotifyRecordError) as caught:
        fan.event_records(data)
    assert caught.value.field == field


def test_response_bytes():
    assert fan.response_bytes(9, True) == struct.pack("=iI", 9, fan.FAN_ALLOW)
    assert fan.response_bytes(9, False) == struct.pack("=iI", 9, fan.FAN_DENY)


def _verdict(allow: bool = True) -> Verdict:
    return Verdict(allow=allow, report=Report(path="x", status=Status.VALID))


def test_cache_is_a_bounded_lru_keyed_by_version_and_rules():
    cache = VerdictCache(2)
    a, b, c = (1, 10, 5, 1, 1), (1, 11, 5, 1, 1), (1, 12, 5, 1, 1)
    cache.put(a, "rules1", _verdict())
    cache.put(b, "rules1", _verdict(False))
    assert cache.get(a, "rules2") is None  # other rules: other verdict
    assert cache.get(a, "rules1") is not None  # a is now the most recent
    cache.put(c, "rules1", _verdict())
    assert cache.get(b, "rules1") is None  # b was the least recently used
    assert (cache.counters.hits, cache.counters.misses, cache.counters.evictions) == (1, 2, 1)
    changed = (1, 10, 5, 2, 2)  # same inode, new mtime/ctime
    assert cache.get(changed, "rules1") is None


def test_cache_invalidation_drops_every_version_of_an_inode():
    cache = VerdictCache(10)
    cache.put((1, 10, 5, 1, 1), "r", _verdict())
    cache.put((1, 10, 6, 2, 2), "r", _verdict())
    cache.put((1, 11, 5, 1, 1), "r", _verdict())
    assert cache.invalidate(1, 10) == 2
    assert len(cache) == 1 and cache.counters.invalidations == 2
    assert cache.invalidate(1, 10) == 0


def test_status_uid_is_the_effective_one():
    status = "Name:\tsmbd\nUid:\t0\t65534\t65534\t65534\nGid:\t0\t0\t0\t0\n"
    assert parse_status_uid(status) == 65534
    assert parse_status_uid("Name:\tx\n") is None
    assert parse_status_uid("Uid:\tgarbage\n") is None


def test_sd_notify_sends_one_datagram(tmp_path: Path):
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(tmp_path / "n.sock"))
        assert sd_notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "n.sock")})
        assert listener.recv(100) == b"READY=1"
    assert not sd_notify("READY=1", {})
    assert not sd_notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "absent.sock")})


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _bad(path: str) -> Report:
    return Report(path=path, status=Status.INVALID)


OPENER = Opener(pid=42, exe="/usr/bin/cat", uid=0, user_name="root")


def test_pattern_needs_five_failures_within_the_window(tmp_path: Path):
    clock = _Clock()
    monitor = PatternMonitor(None, failures=5, window=60, clock=clock)
    for _ in range(4):
        assert monitor.failure(_bad("/srv/a.exe"), OPENER) == []
        clock.now += 20  # spread over 80 s: never 5 within 60 s
    # Now at t=80: the failures at t=0 and t=20 left the window; t=40, 60, 80 remain.
    assert monitor.failure(_bad("/srv/a.exe"), OPENER) == []  # 3 within the window
    assert monitor.failure(_bad("/srv/a.exe"), OPENER) == []  # 4
    [raised] = monitor.failure(_bad("/srv/a.exe"), OPENER)
    assert raised == "5 code integrity failures within 60 seconds"
    assert monitor.failure(_bad("/srv/a.exe"), OPENER) == []  # a new burst starts


def test_pattern_high_value_path_alerts_at_once(tmp_path: Path):
    monitor = PatternMonitor(None, high_value=(str(tmp_path / "drivers"),))
    [raised] = monitor.failure(_bad(str(tmp_path / "drivers" / "x.sys")), OPENER)
    assert "high-value path" in raised
    assert monitor.failure(_bad(str(tmp_path / "driversX" / "x.sys")), OPENER) == []


def test_key_file_is_created_private_and_a_readable_one_is_refused(tmp_path: Path):
    if os.geteuid() != 0:
        pytest.skip("the key must be owned by root")
    path = tmp_path / "keys" / "guard.key"
    key = load_key(str(path), create=True)
    assert len(key) == 64 and (path.stat().st_mode & 0o777) == 0o600
    assert load_key(str(path), create=False) == key
    path.chmod(0o644)
    with pytest.raises(ControlError, match="mode 0600"):
        load_key(str(path), create=False)
    with pytest.raises(ControlError, match="no key file"):
        load_key(str(tmp_path / "none"), create=False)
    assert sign(key, "status", 1.0, "n") != sign(key, "stop", 1.0, "n")


def test_settings_merge_config_and_command_line(tmp_path: Path):
    config = tmp_path / "guard.toml"
    config.write_text(
        'paths = ["/srv/share"]\nmode = "enforce"\ntimeout = 1.5\ntrust = ["a.pem"]\n'
        "[pattern]\nfailures = 3\nwindow = 30\n"
    )
    settings = load_settings((), {"config_file": str(config), "timeout": 0.5})
    assert settings.paths == ("/srv/share",) and settings.mode == "enforce"
    assert settings.timeout == 0.5 and settings.trust_files == ("a.pem",)
    assert (settings.pattern_failures, settings.pattern_window) == (3, 30.0)
    config.write_text('mdoe = "enforce"\n')
    with pytest.raises(ValueError, match="unknown key"):
        load_settings((), {"config_file": str(config)})
    config.write_text('mode = "strict"\n')
    with pytest.raises(ValueError, match="mode must be one of"):
        load_settings((), {"config_file": str(config)})
    config.write_text("timeout = [\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        load_settings((), {"config_file": str(config)})


def test_cli_bad_config_exits_4_and_no_path_is_a_usage_error(tmp_path: Path):
    config = tmp_path / "guard.toml"
    config.write_text("workers = 'many'\n")
    runner = CliRunner()
    result = runner.invoke(cli, ["guard", "--config", str(config)])
    assert result.exit_code == 4 and "wrong type" in result.output
    result = runner.invoke(cli, ["guard", "--control-socket", "none"])
    assert result.exit_code == 2 and "at least one PATH" in result.output
    result = runner.invoke(cli, ["guard", str(tmp_path / "absent"), "--no-store"])
    assert result.exit_code == 2 and "no such file or directory" in result.output


def _judge(path: Path, mode: str, policy: Path | None = None) -> Verdict:
    rules = build_rules(
        RulesConfig(
            mode=mode,  # type: ignore[arg-type]
            trust_files=(str(PKI / "ca.pem"), str(PKI / "tsaca.pem")),
            no_default_trust=True,
            policy_file=str(policy) if policy else None,
        )
    )
    fd = os.open(path, os.O_RDONLY)
    try:
        return rules.judge_fd(fd, str(path))
    finally:
        os.close(fd)


def test_rules_judge_an_open_fd():
    assert _judge(GOOD, "enforce").allow
    denied = _judge(TAMPERED, "enforce")
    assert not denied.allow and denied.report.status is Status.INVALID
    assert _judge(TAMPERED, "audit").allow  # audit: allowed, the report still says invalid


def test_policy_decision_follows_the_guard_mode(tmp_path: Path):
    policy = tmp_path / "policy.toml"
    policy.write_text('name = "signed only"\nid = "guard-test"\nmode = "audit"\n')
    verdict = _judge(TAMPERED, "enforce", policy)
    assert not verdict.allow
    assert verdict.report.decision is not None and verdict.report.decision.mode == "enforce"
    assert verdict.report.decision.enforced_denial


def test_the_example_config_loads():
    example = Path(__file__).resolve().parents[2] / "examples" / "guard" / "guard.toml"
    settings = load_settings((), {"config_file": str(example)})
    assert settings.mode == "audit" and settings.paths
    assert settings.high_value == ("/srv/samba/drivers",) and settings.pattern_failures == 5
