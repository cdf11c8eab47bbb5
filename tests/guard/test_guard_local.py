"""The guard on a real fanotify group (root): enforce, audit, cache invalidation, SIGKILL,
reload, patterns and the control port."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from codeintegrity.guard.control import ControlError, load_key, send_raw, sign
from tests.conftest import PKI
from tests.guard.conftest import FIXTURE_TRUST, GOOD, TAMPERED, cat

CAT = os.path.realpath(shutil.which("cat") or "/bin/cat")


@pytest.mark.parametrize("mark", ["filesystem", "mount"])
def test_enforce_denies_the_tampered_file_and_allows_the_rest(tree: Path, start_guard, mark):
    guard = start_guard([tree], "--mode", "enforce", "--mark", mark, *FIXTURE_TRUST)
    good = cat(tree / "good.exe")
    assert good.returncode == 0 and good.stdout == GOOD.read_bytes()
    bad = cat(tree / "tampered.exe")
    assert bad.returncode != 0
    assert b"Operation not permitted" in bad.stderr
    assert cat(tree / "note.txt").stdout == b"not a PE\n"
    # A second open of the good file is answered from the cache.
    assert cat(tree / "good.exe").returncode == 0
    assert guard.stop() == 0
    assert "denied: 1" in guard.output
    assert "cache_hits: 1" in guard.output
    [event] = guard.events(5038)
    assert event.path == str(tree / "tampered.exe")
    [block] = guard.events(3033)
    assert block.value("ProcessNameBuffer") == CAT


def test_audit_allows_both_and_names_the_opener(tree: Path, start_guard):
    guard = start_guard([tree], "--mode", "audit", *FIXTURE_TRUST)
    assert cat(tree / "good.exe").returncode == 0
    bad = cat(tree / "tampered.exe")
    assert bad.returncode == 0 and bad.stdout == TAMPERED.read_bytes()
    assert guard.stop() == 0
    [event] = guard.events(5038)
    assert event.path == str(tree / "tampered.exe")
    assert event.context_value("process.executable") == CAT
    assert event.user_id == "S-1-22-1-0"  # root, as Samba maps Unix uids
    details = [e for e in guard.events() if e.activity_id == event.activity_id]
    assert {e.event_id for e in details} >= {3089, 3033, 5038}
    assert all(e.process_id == event.process_id for e in details)
    assert [e.value("ProcessNameBuffer") for e in details if e.event_id == 3033] == [CAT]
    assert not [e for e in guard.events(5038) if e.path == str(tree / "good.exe")]


def test_modify_after_verify_is_judged_again(tree: Path, start_guard):
    guard = start_guard([tree], "--mode", "enforce", *FIXTURE_TRUST)
    target = tree / "app.exe"
    target.write_bytes(GOOD.read_bytes())
    assert cat(target).returncode == 0
    # Same inode, same size: only the bytes change.
    tampered = TAMPERED.read_bytes()
    with target.open("r+b") as handle:
        handle.write(tampered)
        handle.truncate(len(tampered))
    bad = cat(target)
    assert bad.returncode != 0 and b"Operation not permitted" in bad.stderr
    assert guard.stop() == 0
    assert "cache_invalidations: 0" not in guard.output


def test_sigkill_with_opens_pending_lets_them_complete(tree: Path, start_guard):
    guard = start_guard([tree], "--mode", "enforce", *FIXTURE_TRUST)
    guard.proc.send_signal(signal.SIGSTOP)  # the guard can no longer answer
    opener = subprocess.Popen(["cat", str(tree / "tampered.exe")], stdout=subprocess.PIPE)
    try:
        # The open is held by the kernel, waiting for the guard's answer.
        deadline = time.monotonic() + 10
        while _state(opener.pid) != "S" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert opener.poll() is None
        guard.proc.send_signal(signal.SIGKILL)
        out, _ = opener.communicate(timeout=30)
    finally:
        if opener.poll() is None:
            opener.kill()
    assert opener.returncode == 0  # the group went away: the kernel allowed the open
    assert out == TAMPERED.read_bytes()


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "?"


def test_sighup_reloads_trust_without_dropping_marks(tree: Path, tmp_path: Path, start_guard):
    anchors = tmp_path / "anchors.pem"
    anchors.write_text((PKI / "tsaca.pem").read_text())  # not the publisher's CA
    guard = start_guard([tree], "--mode", "enforce", "--no-default-trust", "--trust", str(anchors))
    assert cat(tree / "good.exe").returncode != 0  # untrusted chain: denied
    anchors.write_text((PKI / "ca.pem").read_text() + (PKI / "tsaca.pem").read_text())
    guard.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 30
    while "reloaded" not in guard.output and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "reloaded" in guard.output
    assert cat(tree / "good.exe").returncode == 0
    assert cat(tree / "tampered.exe").returncode != 0  # still guarded: the marks stayed
    assert guard.stop() == 0


def test_patterns_raise_4618(tree: Path, start_guard):
    valuable = tree / "drivers"
    valuable.mkdir()
    shutil.copyfile(TAMPERED, valuable / "evil.sys")
    guard = start_guard([tree], "--mode", "audit", "--high-value", str(valuable), *FIXTURE_TRUST)
    assert cat(valuable / "evil.sys").returncode == 0
    for _ in range(4):
        assert cat(tree / "tampered.exe").returncode == 0
    assert guard.stop() == 0
    alerts = guard.events(4618)
    described = sorted(str(e.context_value("rule.description")) for e in alerts)
    assert len(alerts) == 2, described
    assert "5 code integrity failures within 60 seconds" in described
    assert any("high-value path" in d and "evil.sys" in d for d in described)
    assert all(e.value("EventId") == "5038" and e.value("TargetUserName") == "root" for e in alerts)


def test_control_port_status_refusal_bad_mac_and_stop(tree: Path, start_guard):
    guard = start_guard([tree], "--mode", "enforce", *FIXTURE_TRUST)
    assert cat(tree / "good.exe").returncode == 0
    status = _cli(
        "guard", "status", "--control-socket", str(guard.socket), "--key-file", str(guard.key)
    )
    assert status.returncode == 0, status.stderr
    assert "allowed: 1" in status.stdout and "latency_p99_us:" in status.stdout
    # An unprivileged peer is refused and raises 4615.
    stranger = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c",
         "from codeintegrity.guard.control import send_raw; import sys; "
         f"send_raw({str(guard.socket)!r}, b'{{\"command\": \"stop\"}}\\n')"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert stranger.returncode != 0 and "permission denied" in stranger.stderr
    # A request signed with the wrong key raises 4816 and does nothing.
    forged = guard.key.parent / "forged.key"
    forged.write_text("0" * 64 + "\n")
    forged.chmod(0o600)
    bad = _cli("guard", "stop", "--control-socket", str(guard.socket), "--key-file", str(forged))
    assert bad.returncode != 0 and "integrity check failed" in bad.stderr
    # A correctly signed request sent twice: the replay is refused the same way.
    key = load_key(str(guard.key), create=False)
    when = f"{time.time():.3f}"
    signed = {"command": "status", "time": when, "nonce": "n1"}
    signed["mac"] = sign(key, "status", float(when), "n1")
    payload = json.dumps(signed).encode() + b"\n"
    assert send_raw(str(guard.socket), payload)["allowed"] == 1
    with pytest.raises(ControlError, match="integrity check failed"):
        send_raw(str(guard.socket), payload)
    assert guard.proc.poll() is None
    stop = _cli(
        "guard", "stop", "--control-socket", str(guard.socket), "--key-file", str(guard.key)
    )
    assert stop.returncode == 0 and "stopping" in stop.stdout
    assert guard.proc.wait(30) == 0
    [refused] = guard.events(4615)
    assert refused.value("SubjectUserSid") == "S-1-22-1-65534"
    assert refused.value("ServerPortName") == str(guard.socket)
    macs = guard.events(4816)
    assert len(macs) == 2 and {e.value("ProtocolSequence") for e in macs} == {"ncalrpc"}
    assert "control_refused: 1" in guard.output and "control_bad_mac: 2" in guard.output


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "codeintegrity", *args], capture_output=True, text=True, timeout=60
    )
