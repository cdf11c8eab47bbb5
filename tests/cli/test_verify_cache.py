"""`verify` with the results cache: a second run over unchanged files is answered from the
cache, prints the same output, raises the same events; `--no-cache` and `--cache` work."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from codeintegrity import results_cache
from codeintegrity import verify as verify_module
from codeintegrity.cli.exit_codes import NOT_VALID, USAGE
from codeintegrity.cli.verify_cmd import verify

from ..conftest import FIXTURES, PKI

ANCHORS = ["--no-default-trust", "--trust", str(PKI / "ca.pem"), "--trust", str(PKI / "tsaca.pem")]
FILES = [
    str(FIXTURES / name)
    for name in ("t64_sha256_ph_ts.exe", "bad_flip_text.exe", "unsigned_removed.exe")
]


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("CODEINTEGRITY_HOME", str(tmp_path / "home"))
    # Checked-out test files may be seconds old: make them storable regardless.
    monkeypatch.setattr(results_cache, "RACY_WINDOW_NS", 0)
    return tmp_path / "home"


class Counter:
    def __init__(self, refuse: bool = False) -> None:
        self.calls = 0
        self.refuse = refuse
        self.real = verify_module.verify_path

    def __call__(self, name, options=None, **kwargs):
        if self.refuse:
            raise AssertionError(f"engine called for {name}: expected a cache hit")
        self.calls += 1
        return self.real(name, options, **kwargs)


@pytest.fixture
def engine(monkeypatch) -> Counter:
    counter = Counter()
    monkeypatch.setattr(verify_module, "verify_path", counter)
    return counter


def run(*args: str) -> Result:
    # --jobs 1: the engine calls are counted in this process.
    return CliRunner().invoke(verify, ["--no-store", "--jobs", "1", *args], catch_exceptions=False)


def timeless(text: str) -> str:
    return re.sub(r"judged time [0-9T:.+-]+\)", "judged time X)", text)


def test_second_run_is_answered_from_the_cache_with_identical_json(engine, home):
    cold = run("--json", *ANCHORS, *FILES)
    assert cold.exit_code == NOT_VALID and engine.calls == len(FILES)
    assert (home / "results.sqlite3").is_file()
    engine.refuse = True
    warm = run("--json", *ANCHORS, *FILES)
    assert warm.exit_code == NOT_VALID, warm.stderr
    assert warm.stdout == cold.stdout
    assert [json.loads(line)["status"] for line in warm.stdout.splitlines()] == [
        "valid",
        "invalid",
        "unsigned",
    ]


def test_untrusted_verdict_from_the_cache_reads_like_a_fresh_one(engine):
    # Without anchors the chain findings name the moment they were judged at.
    cold = run("--json", "--no-default-trust", FILES[0])
    engine.refuse = True
    warm = run("--json", "--no-default-trust", FILES[0])
    assert "judged time" in cold.stdout
    assert timeless(warm.stdout) == timeless(cold.stdout)


def test_table_output_is_the_same_from_the_cache(engine):
    cold = run(*ANCHORS, *FILES)
    engine.refuse = True
    warm = run(*ANCHORS, *FILES)
    assert warm.stdout == cold.stdout and "bad_flip_text.exe" in warm.stdout


def test_cached_reports_still_raise_their_events(engine, tmp_path):
    def events(path: Path) -> list[tuple[str, dict]]:
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        return [(r["winlog"]["event_id"], r["winlog"].get("event_data")) for r in rows]

    run(*ANCHORS, "--events", f"jsonl:{tmp_path / 'cold.jsonl'}", *FILES)
    engine.refuse = True
    run(*ANCHORS, "--events", f"jsonl:{tmp_path / 'warm.jsonl'}", *FILES)
    cold, warm = events(tmp_path / "cold.jsonl"), events(tmp_path / "warm.jsonl")
    assert warm == cold
    assert {"5038", "6281"} <= {event_id for event_id, _ in warm}


def test_no_cache_verifies_every_time_and_writes_nothing(engine, home):
    for _ in range(2):
        result = run("--json", "--no-cache", *ANCHORS, *FILES)
        assert result.exit_code == NOT_VALID
    assert engine.calls == 2 * len(FILES)
    assert not (home / "results.sqlite3").exists()


def test_cache_option_picks_the_file(engine, home, tmp_path):
    chosen = tmp_path / "elsewhere" / "mine.sqlite3"
    run("--json", "--cache", str(chosen), *ANCHORS, FILES[0])
    assert chosen.is_file() and not (home / "results.sqlite3").exists()
    engine.refuse = True
    assert run("--json", "--cache", str(chosen), *ANCHORS, FILES[0]).exit_code == 0


def test_no_cache_and_cache_together_is_a_usage_error(tmp_path):
    result = run("--no-cache", "--cache", str(tmp_path / "c.sqlite3"), FILES[0])
    assert result.exit_code == USAGE and "exclude each other" in result.stderr


def test_corrupt_cache_gives_one_warning_and_the_run_goes_on(engine, home):
    home.mkdir()
    (home / "results.sqlite3").write_bytes(b"this is not a database" * 100)
    result = run("--json", *ANCHORS, *FILES)
    assert result.exit_code == NOT_VALID
    (warning,) = result.stderr.splitlines()
    assert warning.startswith("codeintegrity: warning: ") and "rebuilding" in warning
    assert len(result.stdout.splitlines()) == len(FILES)
    engine.refuse = True
    again = run("--json", *ANCHORS, *FILES)
    assert again.stdout == result.stdout and again.stderr == ""


def test_catalog_runs_are_not_cached(engine, home):
    args = ("--json", *ANCHORS, "--catalog", str(FIXTURES / "fixtures.cat"))
    first = run(*args, str(FIXTURES / "cat_member_t64.exe"))
    second = run(*args, str(FIXTURES / "cat_member_t64.exe"))
    assert first.exit_code == 0 and second.stdout == first.stdout
    assert engine.calls == 2
    assert not (home / "results.sqlite3").exists()


def test_policy_is_applied_to_cached_reports(engine, tmp_path):
    policy = tmp_path / "p.toml"
    unsigned = str(FIXTURES / "unsigned_removed.exe")
    digest = json.loads(run("--json", *ANCHORS, unsigned).stdout)["authentihash"]["sha256"]
    policy.write_text(f'name = "deny"\nid = "d1"\n[deny]\nhashes = ["{digest}"]\n')
    cold = run("--json", *ANCHORS, "--policy", str(policy), unsigned)
    engine.refuse = True
    warm = run("--json", *ANCHORS, "--policy", str(policy), unsigned)
    assert warm.exit_code == cold.exit_code == NOT_VALID
    assert warm.stdout == cold.stdout
    decision = json.loads(warm.stdout)["decision"]
    assert decision["allowed"] is False and decision["policy_id"] == "d1"
    # The decision never enters the cache: without the policy the report has none.
    assert json.loads(run("--json", *ANCHORS, unsigned).stdout)["decision"] is None
