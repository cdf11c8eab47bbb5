"""`codeintegrity verify` as a user runs it: a real process, real files, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ..conftest import FIXTURES, PKI

ANCHORS = ["--trust", str(PKI / "ca.pem"), "--trust", str(PKI / "tsaca.pem")]


def run(*args: str, tmp_path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CODEINTEGRITY_HOME=str(tmp_path))
    return subprocess.run(
        [sys.executable, "-m", "codeintegrity", "verify", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def lines(result):
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def test_demo_sample_without_arguments(tmp_path):
    result = run("--json", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    (report,) = lines(result)
    assert report["status"] == "valid"
    assert report["signatures"][0]["signer"] and "Microsoft" in report["signatures"][0]["signer"]
    assert "bundled demo sample" in result.stderr


def test_json_lines_schema(tmp_path):
    result = run(
        "--json",
        *ANCHORS,
        str(FIXTURES / "t64_sha256_ph_ts.exe"),
        str(FIXTURES / "bad_flip_text.exe"),
        tmp_path=tmp_path,
    )
    assert result.returncode == 1
    good, bad = lines(result)
    assert good["status"] == "valid" and good["event_ids"] == []
    sig = good["signatures"][0]
    assert sig["index"] == 0 and sig["digest_algorithm"] == "sha256"
    assert sig["image_hash"] == "valid" and sig["page_hashes"] == "valid"
    assert sig["trusted"] is True and sig["timestamp"].startswith("2026-01-01T00:01:00")
    assert set(good["authentihash"]) >= {"sha256"}
    assert bad["status"] == "invalid" and bad["event_ids"] == [5038, 6281]
    assert {f["event_id"] for f in bad["findings"]} >= {5038, 6281}
    assert all({"code", "event_id", "detail"} <= set(f) for f in bad["findings"])


def test_table_output(tmp_path):
    result = run(*ANCHORS, str(FIXTURES / "t64_shared_writable_resigned.exe"), tmp_path=tmp_path)
    assert result.returncode == 1
    assert "6410" in result.stdout and "invalid" in result.stdout
    assert "Throwaway Test Publisher" in result.stdout


def test_unreadable_path_is_reported_and_others_judged(tmp_path):
    missing = tmp_path / "nope.exe"
    result = run(
        "--json", *ANCHORS, str(missing), str(FIXTURES / "t64_sha256.exe"), tmp_path=tmp_path
    )
    assert result.returncode == 3
    err = [line for line in result.stderr.splitlines() if "nope.exe" in line]
    assert len(err) == 1 and "Traceback" not in result.stderr
    error, report = lines(result)
    assert error == {
        "path": str(missing),
        "status": "error",
        "error": {"errno": 2, "message": "No such file or directory", "internal": False},
    }
    assert report["status"] == "valid"


def test_directory_is_walked(tmp_path):
    folder = tmp_path / "tree"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "a.exe").write_bytes((FIXTURES / "t64_sha256.exe").read_bytes())
    (folder / "notes.txt").write_text("not a PE")
    result = run("--json", *ANCHORS, str(folder), tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert [r["path"].endswith("a.exe") for r in lines(result)] == [True]


@pytest.mark.parametrize(
    "args",
    [
        ["--at", "yesterday"],
        ["--no-such-option"],
        ["--require-page-hashes-for", "some"],
    ],
)
def test_usage_errors(args, tmp_path):
    result = run(*args, str(FIXTURES / "t64_sha256.exe"), tmp_path=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stderr.strip()


@pytest.mark.parametrize("option", ["--trust", "--policy"])
def test_garbage_configuration_files(option, tmp_path):
    bad = tmp_path / "bad.pem"
    bad.write_text("this is not a certificate = [\n")
    for target in (bad, tmp_path / "missing.pem"):
        result = run(option, str(target), str(FIXTURES / "t64_sha256.exe"), tmp_path=tmp_path)
        assert result.returncode == 4, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and target.name in result.stderr


def test_malformed_and_truncated_files(tmp_path):
    junk = tmp_path / "junk.dll"
    junk.write_bytes(b"MZ" + b"\xff" * 50)
    result = run(
        "--json", *ANCHORS, str(junk), str(FIXTURES / "bad_truncate_cert.exe"), tmp_path=tmp_path
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert [r["status"] for r in lines(result)] == ["malformed", "malformed"]


def test_module_and_script_agree(tmp_path):
    script = os.path.join(os.path.dirname(sys.executable), "codeintegrity")
    env = dict(os.environ, CODEINTEGRITY_HOME=str(tmp_path))
    args = ["verify", "--json", "--no-store", *ANCHORS, str(FIXTURES / "t64_sha1_ph.exe")]
    a = subprocess.run([script, *args], capture_output=True, text=True, env=env, check=False)
    b = subprocess.run(
        [sys.executable, "-m", "codeintegrity", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert a.returncode == b.returncode == 0
    assert json.loads(a.stdout)["authentihash"] == json.loads(b.stdout)["authentihash"]


def test_fifo_is_not_opened(tmp_path):
    fifo = tmp_path / "pipe.exe"
    os.mkfifo(fifo)
    result = run("--json", *ANCHORS, str(fifo), str(FIXTURES / "t64_sha256.exe"), tmp_path=tmp_path)
    assert result.returncode == 3
    assert "not a regular file" in result.stderr
    assert [r["status"] for r in lines(result)] == ["error", "valid"]


def test_internal_error_on_one_file_does_not_end_the_run(tmp_path, monkeypatch):
    from click.testing import CliRunner

    import codeintegrity.verify as engine
    from codeintegrity.cli.verify_cmd import verify

    real = engine.verify_path

    def flaky(path, options=None, **kwargs):
        if str(path).endswith("t64_sha1_ph.exe"):
            raise RuntimeError("boom")
        return real(path, options, **kwargs)

    monkeypatch.setattr(engine, "verify_path", flaky)
    monkeypatch.setenv("CODEINTEGRITY_HOME", str(tmp_path))
    paths = [str(FIXTURES / "t64_sha1_ph.exe"), str(FIXTURES / "t64_sha256.exe")]
    result = CliRunner().invoke(verify, ["--json", "--no-store", *ANCHORS, *paths])
    assert result.exit_code == 70
    assert "internal error on" in result.output and "RuntimeError: boom" in result.output
    assert '"status":"valid"' in result.output  # the other file was still judged


def test_extra_digests_and_page_hash_requirement(tmp_path):
    import hashlib

    target = FIXTURES / "t64_sha256.exe"
    result = run(
        "--json",
        "--no-cache",
        *ANCHORS,
        "--hash",
        "sha1",
        "--hash",
        "md5",
        "--flat-hash",
        "sha256",
        str(target),
        tmp_path=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    (report,) = lines(result)
    assert set(report["authentihash"]) == {"md5", "sha1", "sha256"}
    assert report["flat_hash"] == {"sha256": hashlib.sha256(target.read_bytes()).hexdigest()}
    # Not a driver: "drivers" does not apply; "all" does (6281, signed without page hashes).
    drivers = run(
        "--json",
        "--no-cache",
        *ANCHORS,
        "--require-page-hashes-for",
        "drivers",
        str(target),
        tmp_path=tmp_path,
    )
    assert drivers.returncode == 0 and lines(drivers)[0]["event_ids"] == []
    strict = run(
        "--json", "--no-cache", *ANCHORS, "--require-page-hashes", str(target), tmp_path=tmp_path
    )
    assert strict.returncode == 1 and lines(strict)[0]["event_ids"] == [6281]
