"""`verify --catalog` and `verify --policy` fed garbage, as a user runs them (real processes).

A named catalog that cannot be read stops the run (exit 4, one line naming it): losing it would
report the files it vouches for as unsigned. Junk .cat files inside a named directory (a CatRoot
holds odd files) are skipped with a one-line warning each. A policy that does not load
stops the run with one line and exit 4. Never a traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from codeintegrity.cli.exit_codes import CONFIG, NOT_VALID, OK, USAGE

from ..conftest import FIXTURES, PKI

ANCHORS = ["--no-default-trust", "--trust", str(PKI / "ca.pem"), "--trust", str(PKI / "tsaca.pem")]
MEMBER = FIXTURES / "cat_member_t64.exe"  # unsigned, listed in fixtures.cat
SIGNED = FIXTURES / "t64_sha256.exe"


def verify(*args: str, tmp_path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CODEINTEGRITY_HOME=str(tmp_path / "home"))
    return subprocess.run(
        [sys.executable, "-m", "codeintegrity", "verify", "--json", "--no-store", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def report_of(result) -> dict:
    (line,) = [line for line in result.stdout.splitlines() if line.strip()]
    return json.loads(line)


def stderr_lines(result) -> list[str]:
    assert "Traceback" not in result.stderr
    return result.stderr.splitlines()


@pytest.fixture
def junk_catalogs(tmp_path):
    """A CatRoot-like folder with a random-bytes, an empty, a PE-in-disguise and a FIFO
    catalog (reading the FIFO would block forever)."""
    folder = tmp_path / "catroot"
    folder.mkdir()
    (folder / "garbage.cat").write_bytes(bytes((i * 151 + 7) % 256 for i in range(3000)))
    (folder / "empty.cat").write_bytes(b"")
    shutil.copyfile(SIGNED, folder / "pe.cat")
    os.mkfifo(folder / "fifo.cat")
    return folder


def test_junk_catalogs_are_skipped_with_one_warning_each(tmp_path, junk_catalogs):
    shutil.copyfile(FIXTURES / "fixtures.cat", junk_catalogs / "fixtures.cat")
    result = verify(*ANCHORS, "--catalog", str(junk_catalogs), str(MEMBER), tmp_path=tmp_path)
    assert result.returncode == OK, result.stderr
    report = report_of(result)
    assert report["status"] == "valid"
    assert report["catalog"]["path"] == str(junk_catalogs / "fixtures.cat")
    warnings = stderr_lines(result)
    assert len(warnings) == 4
    for name in ("empty.cat", "fifo.cat", "garbage.cat", "pe.cat"):
        (line,) = [w for w in warnings if f"{junk_catalogs / name}: catalog skipped: " in w]
        assert line.startswith("codeintegrity: warning: ")


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("garbage.cat", "ContentInfo at offset 0x0: length of 30 octets is too large"),
        ("empty.cat", "ContentInfo at offset 0x0: element expected"),
        ("pe.cat", "ContentInfo at offset 0x0: expected tag 0x30, found 0x4d"),
        ("fifo.cat", "not a regular file"),
    ],
)
def test_a_junk_catalog_named_alone_stops_the_run(tmp_path, junk_catalogs, name, reason):
    """Defect 5 of the CLI contract: a named catalog that does not load is exit 4 before
    anything is verified (it used to be a warning and the member was reported unsigned)."""
    path = junk_catalogs / name
    result = verify(*ANCHORS, "--catalog", str(path), str(MEMBER), tmp_path=tmp_path)
    assert result.returncode == CONFIG
    assert result.stdout == ""
    (line,) = stderr_lines(result)
    assert line.startswith(f"codeintegrity: {path}: catalog does not load: {reason}")


def test_missing_catalog_path_stops_the_run(tmp_path):
    missing = tmp_path / "not-there" / "x.cat"
    result = verify(*ANCHORS, "--catalog", str(missing), str(SIGNED), tmp_path=tmp_path)
    assert result.returncode == CONFIG and result.stdout == ""
    assert stderr_lines(result) == [
        f"codeintegrity: {missing}: catalog does not load: No such file or directory"
    ]


def test_tampered_signed_catalog_cannot_vouch(tmp_path):
    data = bytearray((FIXTURES / "fixtures.cat").read_bytes())
    data[-10] ^= 0xFF  # inside the SignerInfo's signature value
    tampered = tmp_path / "tampered.cat"
    tampered.write_bytes(bytes(data))
    result = verify(*ANCHORS, "--catalog", str(tampered), str(MEMBER), tmp_path=tmp_path)
    assert result.returncode == NOT_VALID
    report = report_of(result)
    assert report["status"] == "invalid"
    assert [f["code"] for f in report["findings"]] == ["catalog.signature-invalid"]
    assert stderr_lines(result) == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (bytes(range(256)) * 4, "policy is not UTF-8"),
        (b'<?xml version="1.0"?>\n<!DOCTYPE x [<!ENTITY a "b">]>\n<x/>', "TOML syntax error"),
        (("a = " + "[" * 50_000 + "]" * 50_000).encode(), "TOML nested too deeply"),
        (("name = " + "9" * 5000).encode(), "TOML value cannot be read"),
        (b"mode = 1\n", "bad value for 'mode'"),
        (b'[revocation]\ncrls = ["junk.crl"]\n', "not a valid X.509 CRL"),
        (b'[revocation]\ncrls = ["nope.crl"]\n', "CRL file not found"),
    ],
)
def test_policy_that_does_not_load_exits_4_with_one_line(tmp_path, content, message):
    (tmp_path / "junk.crl").write_bytes(b"\x30\x03\x02\x01\x01")
    policy = tmp_path / "policy.toml"
    policy.write_bytes(content)
    result = verify(*ANCHORS, "--policy", str(policy), str(SIGNED), tmp_path=tmp_path)
    assert result.returncode == CONFIG
    (line,) = stderr_lines(result)
    assert line.startswith("codeintegrity: ") and message in line
    assert result.stdout == ""


def test_policy_path_that_is_not_a_file(tmp_path):
    for path in (tmp_path / "missing.toml", tmp_path):
        result = verify(*ANCHORS, "--policy", str(path), str(SIGNED), tmp_path=tmp_path)
        lines = stderr_lines(result)
        assert result.stdout == ""
        if result.returncode == USAGE:  # click refuses a directory itself (verify_cmd's choice)
            assert "is a directory" in lines[-1]
        else:
            assert result.returncode == CONFIG
            assert lines == [f"codeintegrity: {path}: cannot read policy: {_reason(path)}"]


def _reason(path) -> str:
    return "Is a directory" if path.is_dir() else "No such file or directory"


def test_empty_policy_allows_a_valid_file(tmp_path):
    policy = tmp_path / "empty.toml"
    policy.write_bytes(b"")
    result = verify(*ANCHORS, "--policy", str(policy), str(SIGNED), tmp_path=tmp_path)
    assert result.returncode == OK, result.stderr
    report = report_of(result)
    assert report["status"] == "valid" and report["decision"]["allowed"] is True
