"""A store and a `verify --json` file made by verifying the test fixtures with the real CLI,
plus one tampered copy whose path is hostile HTML (quotes, a script element)."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.conftest import FIXTURES, PKI

# A directory and a file name that together spell a script element, quotes and an ampersand.
HOSTILE_DIR = '<script>console.error("pwned-1")<'
HOSTILE_NAME = "script><img src=x onerror=\"console.error('pwned-2')\">&amp;'.exe"


@dataclass(frozen=True)
class VerifiedRun:
    store: Path
    results: Path
    reports: list[dict]
    hostile_path: str


@pytest.fixture(scope="session")
def verified_run(tmp_path_factory: pytest.TempPathFactory) -> VerifiedRun:
    from codeintegrity.cli.main import cli

    work = tmp_path_factory.mktemp("report-run")
    hostile_dir = work / HOSTILE_DIR
    hostile_dir.mkdir()
    hostile = hostile_dir / HOSTILE_NAME
    shutil.copyfile(FIXTURES / "bad_flip_text.exe", hostile)
    store = work / "events.sqlite3"
    args = [
        "verify", "--json", "--no-cache", "--store", str(store),
        "--trust", str(PKI / "ca.pem"), "--trust", str(PKI / "tsaca.pem"),
        str(FIXTURES), str(hostile),
    ]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output  # some fixtures are tampered on purpose
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    results = work / "results.jsonl"
    results.write_text("\n".join(lines) + "\n", encoding="utf-8")
    reports = [json.loads(line) for line in lines]
    assert any(r["path"] == str(hostile) for r in reports)
    return VerifiedRun(store, results, reports, str(hostile))
