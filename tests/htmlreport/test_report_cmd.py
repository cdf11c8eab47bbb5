"""`codeintegrity report`: options, exit statuses and its one-line messages."""

from __future__ import annotations

from click.testing import CliRunner

from codeintegrity.cli.main import cli


def run(*args: str):
    return CliRunner().invoke(cli, ["report", *args])


def test_report_from_the_store_and_from_results(tmp_path, verified_run):
    out = tmp_path / "store.html"
    result = run("--store", str(verified_run.store), "-o", str(out))
    assert result.exit_code == 0, result.output
    assert "files with events" in result.stderr and out.stat().st_size > 10_000
    assert "<title>Code Integrity report" in out.read_text(encoding="utf-8")
    out2 = tmp_path / "results.html"
    result = run("--results", str(verified_run.results), "-o", str(out2))
    assert result.exit_code == 0, result.output
    assert f"{len(verified_run.reports)} files" in result.stderr


def test_filters_reach_the_store(tmp_path, verified_run):
    out = tmp_path / "r.html"
    result = run(
        "--store", str(verified_run.store), "--since", "2000-01-01", "--until", "1h",
        "--computer", "no-such-host", "-o", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "0 files with events" in result.stderr
    text = out.read_text(encoding="utf-8")
    assert "computer: <b>no-such-host</b>" in text and "since: <b>2000-01-01" in text


def test_usage_and_input_errors(tmp_path, verified_run):
    out = str(tmp_path / "r.html")
    both = run(
        "--store", str(verified_run.store), "--results", str(verified_run.results), "-o", out
    )
    assert both.exit_code == 2 and "exclude each other" in both.stderr
    timed = run("--results", str(verified_run.results), "--since", "2h", "-o", out)
    assert timed.exit_code == 2 and "select events of a store" in timed.stderr
    bad_time = run("--since", "yesterday-ish", "-o", out)
    assert bad_time.exit_code == 2
    assert run("--store", str(verified_run.store)).exit_code == 2  # -o is required
    missing = run("--store", str(tmp_path / "none.sqlite3"), "-o", out)
    assert missing.exit_code == 4
    assert missing.stderr.count("\n") == 1 and "none.sqlite3" in missing.stderr
    wrong = run("--store", str(verified_run.results), "-o", out)
    assert wrong.exit_code == 4 and "is not an event store" in wrong.stderr
    wrong = run("--results", str(verified_run.store), "-o", out)
    assert wrong.exit_code == 4 and "not `verify --json` output" in wrong.stderr
    unwritable = run("--store", str(verified_run.store), "-o", str(tmp_path / "no" / "r.html"))
    assert unwritable.exit_code == 4 and "cannot write" in unwritable.stderr
    assert not (tmp_path / "r.html").exists()
