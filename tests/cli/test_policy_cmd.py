"""`codeintegrity policy ...`: imports, checks and exit codes as a user sees them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from codeintegrity.cli.exit_codes import CONFIG, NOT_VALID, OK
from codeintegrity.cli.policy_cmd import policy
from codeintegrity.policy.load import parse_policy

from ..conftest import DATA, SAMPLES

BLOCKLIST = DATA / "policy" / "microsoft-driver-blocklist-SiPolicy.xml"
LOLDRIVERS = DATA / "policy" / "loldrivers-drivers.csv"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "policy.toml"
WINDIVERT = SAMPLES / "signed" / "pypi__pydivert-4.0.1-py3-none-win_amd64" / "WinDivert64.sys"


def invoke(*args: str):
    return CliRunner().invoke(policy, list(args), catch_exceptions=False)


def test_import_wdac_to_stdout_loads_back():
    result = invoke("import-wdac", str(BLOCKLIST))
    assert result.exit_code == OK, result.stderr
    loaded = parse_policy(result.stdout)
    assert len(loaded.deny_hashes) + len(loaded.deny_page_hashes) == 1704
    assert "not translated: 11 x Deny rule by file name/version/path" in result.stderr
    assert "codeintegrity: imported 1750 rules" in result.stderr


def test_import_wdac_to_file_then_check(tmp_path):
    out = tmp_path / "blocklist.toml"
    result = invoke("import-wdac", str(BLOCKLIST), "-o", str(out), "--mode", "audit")
    assert result.exit_code == OK and result.stdout == ""
    checked = invoke("check", str(out))
    assert checked.exit_code == OK
    assert "mode: audit" in checked.stdout
    assert "denied first-page hashes: 582 [sha1 291, sha256 291] (kernel 582)" in checked.stdout


def test_import_loldrivers_then_check(tmp_path):
    out = tmp_path / "lol.toml"
    result = invoke("import-loldrivers", str(LOLDRIVERS), "-o", str(out))
    assert result.exit_code == OK
    assert "x MD5 Authentihash (weak; use --include-md5)" in result.stderr
    checked = invoke("check", str(out))
    assert checked.exit_code == OK and "mode: enforce" in checked.stdout


def test_check_reports_the_line_and_exits_4(tmp_path):
    bad = tmp_path / "p.toml"
    bad.write_text('name = "x"\n[deny]\nhashs = []\n')
    result = invoke("check", str(bad))
    assert result.exit_code == CONFIG
    assert result.stderr == f"codeintegrity: {bad}:3: unknown key 'deny.hashs'\n"


@pytest.mark.parametrize(
    ("command", "content", "message"),
    [
        ("import-wdac", b'<!DOCTYPE x [<!ENTITY a "b">]><SiPolicy/>', "DOCTYPE/ENTITY"),
        ("import-wdac", None, "cannot read"),
        ("import-loldrivers", b"a,b\n1,2\n", "missing column"),
        ("check", None, "cannot read policy"),
    ],
)
def test_bad_inputs_exit_4_with_one_line(tmp_path, command, content, message):
    path = tmp_path / "input"
    if content is not None:
        path.write_bytes(content)
    result = invoke(command, str(path))
    assert result.exit_code == CONFIG
    assert message in result.stderr and result.stderr.count("\n") == 1


def test_check_the_example_through_the_real_entry_point():
    result = subprocess.run(
        [sys.executable, "-m", "codeintegrity", "policy", "check", str(EXAMPLE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == OK, result.stderr
    assert "name: Example workstation policy" in result.stdout


@pytest.mark.parametrize(("mode", "expected"), [("enforce", NOT_VALID), ("audit", OK)])
def test_verify_with_imported_loldrivers_policy(tmp_path, mode, expected):
    out = tmp_path / "lol.toml"
    assert (
        invoke("import-loldrivers", str(LOLDRIVERS), "-o", str(out), "--mode", mode).exit_code == 0
    )
    result = subprocess.run(
        [sys.executable, "-m", "codeintegrity", "verify", "--json", "--no-store"]
        + ["--policy", str(out), str(WINDIVERT)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=dict(os.environ, CODEINTEGRITY_HOME=str(tmp_path)),
    )
    assert result.returncode == expected, result.stderr
    (report,) = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert report["status"] == "valid"
    assert report["decision"]["allowed"] is False and report["decision"]["mode"] == mode
    assert {r["code"] for r in report["decision"]["reasons"]} == {"policy.denied-hash"}
