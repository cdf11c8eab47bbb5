"""`codeintegrity image` as a user runs it: a real process, a real image, exit codes, events."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ..conftest import DATA, PKI
from .sipolicy_compile import compile_policy

ANCHORS = ["--trust", str(PKI / "ca.pem")]


def run(*args: str, home) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CODEINTEGRITY_HOME=str(home))
    return subprocess.run(
        [sys.executable, "-m", "codeintegrity", "image", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


def test_json_lines_summary_and_events(image_set, image_home, tmp_path):
    events = tmp_path / "events.jsonl"
    result = run(
        "--json", *ANCHORS, "--events", f"jsonl:{events}", "--no-store",
        str(image_set.disks["E01"]), home=image_home,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    *files, last = [json.loads(line) for line in result.stdout.splitlines()]
    by_path = {f["path"]: f for f in files}
    tampered = by_path["C:\\Windows\\System32\\drivers\\WinDivert64_tampered.sys"]
    assert tampered["status"] == "invalid" and 5038 in tampered["event_ids"]
    assert tampered["nt_path"] == (
        "\\Device\\HarddiskVolume1\\Windows\\System32\\drivers\\WinDivert64_tampered.sys"
    )
    assert tampered["services"] == [{"name": "BadFlt", "start": 1, "type": 2}]
    assert by_path["C:\\Windows\\System32\\drivers\\pciide.sys"]["decision"]["allowed"] is False
    summary = last["summary"]
    assert summary["computer_name"] == "WIN-IMAGE01" and summary["container"] == "EwfContainer"
    assert {r["service"] for r in summary["refused_at_next_boot"]} == {"BadFlt", "Ghost", "pciide"}
    records = [json.loads(line) for line in events.read_text().splitlines()]
    security = [r for r in records if r["winlog"]["event_id"] == "5038"]
    assert {r["winlog"]["event_data"]["param1"] for r in security} == {
        "\\Device\\HarddiskVolume1\\Windows\\System32\\drivers\\WinDivert64_tampered.sys",
        "\\Device\\HarddiskVolume1\\Windows\\System32\\drivers\\pciide.sys",
    }
    # Every event about a file names the imaged machine, not this one.
    assert {r["winlog"]["computer_name"] for r in records if r["winlog"]["event_id"] != "5056"} == {
        "WIN-IMAGE01"
    }
    assert "codeintegrity: events:" in result.stderr


def test_table_summary_and_a_binary_reference_policy(image_set, image_home, tmp_path):
    reference = tmp_path / "newer-driversipolicy.cip"
    reference.write_bytes(
        compile_policy((DATA / "image" / "image-policy.xml").read_text(encoding="utf-8"))
    )
    result = run(
        *ANCHORS, "--policy", str(reference), "--device", "\\Device\\HarddiskVolume3",
        str(image_set.disks["vmdk"]), home=image_home,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    out = result.stdout
    assert "computer WIN-IMAGE01, system volume \\Device\\HarddiskVolume3" in out
    assert "Refused at next boot: 3 driver(s) set to start" in out
    assert "Denied by Contoso image policy (newer-driversipolicy.cip): 1 file(s)" in out
    assert "C:\\Windows\\System32\\drivers\\pciide.sys [set to start]" in out
    assert "Tampered, unsigned or malformed: 2 file(s)" in out


def test_mounted_directory_is_judged_like_the_image(image_set, image_home):
    result = run("--json", *ANCHORS, "--no-store", str(image_set.tree), home=image_home)
    assert result.returncode == 1, result.stderr
    summary = json.loads(result.stdout.splitlines()[-1])["summary"]
    assert summary["container"] == "directory" and summary["catalogs"] == 2


def test_one_line_errors_and_exit_codes(tmp_path):
    junk = tmp_path / "junk.vmdk"
    junk.write_bytes(b"KDMV" + b"\0" * 600)
    result = run("--no-store", str(junk), home=tmp_path)
    assert result.returncode == 3
    assert result.stderr.count("\n") == 1 and "codeintegrity:" in result.stderr
    assert "Traceback" not in result.stderr
    bad_policy = tmp_path / "bad.cip"
    bad_policy.write_bytes(compile_policy((DATA / "image" / "image-policy.xml").read_text())[:300])
    result = run("--no-store", "--policy", str(bad_policy), str(tmp_path), home=tmp_path)
    assert result.returncode == 4
    assert "bad.cip: binary policy:" in result.stderr and "Traceback" not in result.stderr
    result = run("--no-store", str(tmp_path), home=tmp_path)
    assert result.returncode == 3 and "no volume holds Windows\\System32" in result.stderr


def test_damaged_images_are_reported_not_crashed_on(image_set, tmp_path):
    raw = image_set.disks["raw"].read_bytes()
    truncated = tmp_path / "truncated.raw"
    truncated.write_bytes(raw[: 6 * 1024 * 1024])
    result = run("--no-store", str(truncated), home=tmp_path)
    assert result.returncode == 3 and "Traceback" not in result.stderr
    assert "WinDivert64.sys: unreadable: short read: 0 of 94144 bytes" in result.stderr
    # The MFT (located through the NTFS boot sector) damaged from record 24 on, where the
    # files live: whatever dissect makes of it is a warning or a one-line error, no traceback.
    part = 1024 * 1024
    boot = raw[part : part + 512]
    cluster = int.from_bytes(boot[11:13], "little") * boot[13]
    mft = part + int.from_bytes(boot[0x30:0x38], "little") * cluster
    damaged = bytearray(raw)
    for offset in range(mft + 24 * 1024, mft + 96 * 1024, 61):
        damaged[offset] ^= 0xFF
    corrupt = tmp_path / "corrupt.raw"
    corrupt.write_bytes(bytes(damaged))
    result = run("--json", "--no-store", str(corrupt), home=tmp_path)
    assert result.returncode in (1, 3), result.stderr
    assert "Traceback" not in result.stderr


def test_worker_processes_give_the_same_output(image_set, image_home):
    one = run("--json", *ANCHORS, "--no-store", str(image_set.disks["qcow2"]), home=image_home)
    two = run(
        "--json", *ANCHORS, "--no-store", "--jobs", "2", str(image_set.disks["qcow2"]),
        home=image_home,
    )  # fmt: skip
    assert (one.returncode, two.returncode) == (1, 1), two.stderr
    parse = [json.loads(line) for line in one.stdout.splitlines()]
    assert len(parse) == 7
    assert [json.loads(line) for line in two.stdout.splitlines()] == parse


def test_worker_processes_judge_every_volume_file_like_one_process(image_set, image_home):
    # --all plans names as the file system gives them (its own string types): they must reach
    # the workers and come back as the same output, errors and exit status.
    common = ["--json", "--all", *ANCHORS, "--no-store", str(image_set.disks["raw"])]
    one = run(*common, home=image_home)
    two = run(*common, "--jobs", "2", home=image_home)
    assert "Traceback" not in two.stderr and "pickle" not in two.stderr, two.stderr
    assert two.returncode == one.returncode
    assert len(one.stdout.splitlines()) > 7
    assert two.stdout == one.stdout and two.stderr == one.stderr
    # NTFS metafiles ($MFT, $Secure, $Extend\\...) are no unreadable input: the exit status
    # is the verdicts' (1: tampered and refused files), not 3.
    assert one.returncode == 1 and "$" not in one.stderr, one.stderr
    summary = json.loads(one.stdout.splitlines()[-1])["summary"]
    assert summary["ntfs_metafiles_skipped"] == 11


def test_a_supplemental_policy_on_the_ntfs_volume_is_merged_with_its_base(tmp_path, image_home):
    # A second NTFS volume made by mkntfs/ntfs-3g like the session's, with a kernel allowlist
    # base policy and its supplemental allowing WinDivert64.sys in CiPolicies\Active.
    from .imagedata import build, missing_tools

    if missing_tools() or os.geteuid() != 0 or not os.path.exists("/dev/fuse"):
        import pytest

        pytest.skip("needs mkntfs, ntfs-3g (FUSE, root) and the other image tools")
    active = "Windows/System32/CodeIntegrity/CiPolicies/Active"
    extra = {}
    for name, guid in (
        ("allowlist-base", "{A1B2C3D4-5E6F-4A1B-8C2D-3E4F5A6B7C01}"),
        ("allowlist-supplemental", "{A1B2C3D4-5E6F-4A1B-8C2D-3E4F5A6B7C02}"),
    ):
        compiled = tmp_path / f"{name}.cip"
        xml = (DATA / "image" / f"{name}.xml").read_text(encoding="utf-8")
        compiled.write_bytes(compile_policy(xml))
        extra[f"{active}/{guid}.cip"] = compiled
    disk = build(tmp_path / "disk", extra=extra, containers=("raw",)).disks["raw"]
    result = run("--json", *ANCHORS, "--no-store", str(disk), home=image_home)
    assert result.returncode == 1, result.stderr
    *files, last = [json.loads(line) for line in result.stdout.splitlines()]
    summary = last["summary"]
    refused = {r["service"] for r in summary["refused_at_next_boot"]}
    assert refused == {"BadFlt", "Ghost", "pciide"}  # WinDivert loads: the supplemental allows it
    windivert = next(f for f in files if f["path"].endswith("drivers\\WinDivert64.sys"))
    assert windivert["decision"]["allowed"] is True
    merged = [p for p in summary["policies"] if p["merged_into"]]
    assert [p["name"] for p in merged] == ["Contoso WinDivert supplemental"]
    # Without the supplemental the same base denies it (the file is what changed, not the rules).
    alone = build(tmp_path / "alone", extra=dict(list(extra.items())[:1]), containers=("raw",))
    result = run("--json", *ANCHORS, "--no-store", str(alone.disks["raw"]), home=image_home)
    summary = json.loads(result.stdout.splitlines()[-1])["summary"]
    assert "WinDivert" in {r["service"] for r in summary["refused_at_next_boot"]}


@pytest.mark.parametrize("value", ["0", "4097"])
def test_max_file_size_out_of_range_is_a_one_line_usage_error(image_set, image_home, value):
    result = run("--max-file-size", value, str(image_set.disks["raw"]), home=image_home)
    assert result.returncode == 2 and "Invalid value for '--max-file-size'" in result.stderr
    assert result.stdout == "" and "Traceback" not in result.stderr
