from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from codeintegrity.cli import exit_codes
from codeintegrity.cli.events_cmd import events
from codeintegrity.cli.selftest_cmd import selftest
from codeintegrity.events.build import events_for_report
from codeintegrity.events.store import EventStore

from ..events.reports import HOST, shared_writable_report, tampered_report

NOW = datetime.now(UTC)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "events.sqlite3"
    with EventStore(path) as db:
        old = NOW - timedelta(days=3)
        db.append(events_for_report(tampered_report("/srv/old/bad.exe"), host=HOST, when=old))
        db.append(events_for_report(shared_writable_report("/srv/new/shared.dll"), host=HOST))
    return path


def run(*args: str):
    return CliRunner().invoke(events, list(args))


def test_table_lists_every_event(store: Path):
    result = run("--store", str(store))
    assert result.exit_code == 0, result.output
    assert "7 event(s)" in result.output
    assert "/srv/old/bad.exe" in result.output and "6410" in result.output


def test_filters_and_jsonl(store: Path):
    result = run(
        "--store", str(store), "--format", "jsonl", "--channel", "security", "--since", "1d"
    )
    docs = [json.loads(line) for line in result.stdout.splitlines()]
    assert [d["winlog"]["event_id"] for d in docs] == ["6410"]
    result = run("--store", str(store), "--format", "jsonl", "--id", "5038", "--id", "6281")
    assert [json.loads(x)["winlog"]["event_id"] for x in result.stdout.splitlines()] == [
        "5038",
        "6281",
    ]
    until = (NOW - timedelta(days=1)).isoformat()
    result = run("--store", str(store), "--format", "jsonl", "--until", until, "--path", "old/")
    assert len(result.stdout.splitlines()) == 4
    result = run("--store", str(store), "--format", "jsonl", "--outcome", "success")
    assert [json.loads(x)["winlog"]["event_id"] for x in result.stdout.splitlines()] == [
        "3089",
        "3089",
    ]
    result = run("--store", str(store), "--format", "jsonl", "--limit", "1")
    assert len(result.stdout.splitlines()) == 1


def test_json_and_xml_formats(store: Path):
    docs = json.loads(run("--store", str(store), "--format", "json").stdout)
    for channel in ("Security", "Microsoft-Windows-CodeIntegrity/Operational"):
        numbers = [d["winlog"]["record_id"] for d in docs if d["winlog"]["channel"] == channel]
        assert numbers == list(range(1, len(numbers) + 1))  # one sequence per channel
    assert len(docs) == 7
    root = ET.fromstring(run("--store", str(store), "--format", "xml").stdout)
    assert len(root) == 7
    assert root[0].tag.endswith("Event")


def test_export_range_to_sinks(store: Path, tmp_path: Path):
    out = tmp_path / "out.xml"
    copy = tmp_path / "copy.sqlite3"
    result = run("--store", str(store), "--id", "5038", "--id", "6410", "--export", f"xml:{out}",
                 "--export", f"sqlite:{copy}")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"exported 2 events to xml:{out}" in result.stderr
    assert result.stdout == ""
    assert len(ET.parse(out).getroot()) == 2  # an <Events> document
    with EventStore(copy) as db:
        assert [e.path for e in db.query()] == ["/srv/old/bad.exe", "/srv/new/shared.dll"]


def test_bad_export_uri_and_bad_store_exit_4(store: Path, tmp_path: Path):
    result = run("--store", str(store), "--export", "nope://x")
    assert result.exit_code == exit_codes.CONFIG
    assert (
        result.stderr.startswith("codeintegrity: unknown sink") and result.stderr.count("\n") == 1
    )
    bogus = tmp_path / "bogus.sqlite3"
    bogus.write_bytes(b"\x00garbage" * 200)
    result = run("--store", str(bogus))
    assert result.exit_code == exit_codes.CONFIG
    assert "cannot" in result.stderr


def test_bad_time_is_a_usage_error(store: Path):
    result = run("--store", str(store), "--since", "yesterday-ish")
    assert result.exit_code == exit_codes.USAGE


def test_missing_store_named_by_store_is_an_error_not_created(tmp_path: Path, monkeypatch):
    path = tmp_path / "none.sqlite3"
    result = run("--store", str(path), "--format", "jsonl")
    assert result.exit_code == exit_codes.CONFIG and result.stdout == ""
    assert result.stderr == f"codeintegrity: event store {path} not found\n"
    assert not path.exists()
    # The default store not created yet is simply empty.
    monkeypatch.setenv("CODEINTEGRITY_HOME", str(tmp_path / "home"))
    result = run("--format", "jsonl")
    assert result.exit_code == 0 and result.stdout == ""
    assert "nothing recorded yet" in result.stderr
    assert not (tmp_path / "home").exists()


def test_limit_shows_the_newest_events_oldest_first(store: Path):
    # EventRecordIDs are numbered per channel: an event is (channel, record id).
    def ids(*args: str) -> list[tuple[str, int, str]]:
        result = run("--store", str(store), "--format", "jsonl", *args)
        assert result.exit_code == 0, result.output
        docs = [json.loads(x)["winlog"] for x in result.stdout.splitlines()]
        return [(d["channel"], int(d["record_id"]), d["event_id"]) for d in docs]

    every = ids()
    assert len(every) == len(set(every)) == 7
    assert [n for channel, n, _ in every if channel == "Security"] == [1, 2, 3]
    assert ids("--limit", "3") == every[-3:]
    [only] = [e for e in every if e[2] == "5038"]
    assert ids("--limit", "2", "--id", "5038") == [only]  # the only one: fewer than asked
    assert ids("--limit", "0") == []


def test_outcome_failure_finds_audit_mode_denials(tmp_path: Path):
    from ..events.reports import denied_report

    path = tmp_path / "audit.sqlite3"
    with EventStore(path) as db:
        db.append(events_for_report(denied_report("audit"), host=HOST))
        db.append(events_for_report(denied_report("enforce"), host=HOST))
    all_ids = [e.event_id for e in EventStore(path).query()]
    assert 3076 in all_ids and 3077 in all_ids

    def codes(outcome: str) -> set[str]:
        result = run("--store", str(path), "--format", "jsonl", "--outcome", outcome)
        return {json.loads(x)["winlog"]["event_id"] for x in result.stdout.splitlines()}

    assert {"3076", "3077"} <= codes("failure")
    assert not {"3076", "3077"} & codes("success")
    table = run("--store", str(path), "--outcome", "failure").output
    assert "3076" in table


def test_help_explains_outcome_channel_and_limit():
    text = " ".join(run("--help").output.split())
    assert "audit-mode policy denials (3076" in text
    assert "security: the Security log" in text and "(3089, 3033, 3063, 3076, 3077)" in text
    assert "Only the newest N" in text


def test_selftest_command_records_5056(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("CODEINTEGRITY_HOME", str(tmp_path))
    result = CliRunner().invoke(selftest, [])
    assert result.exit_code == 0, result.output
    assert "self-test passed: return code 0x0" in result.output
    assert "ECDSA P-384 SHA-384: ok" in result.output
    with EventStore(tmp_path / "events.sqlite3") as db:
        (event,) = db.query()
    assert event.event_id == 5056 and event.value("ReturnCode") == "0x0"
    result = CliRunner().invoke(selftest, ["--no-store", "--json"])
    assert json.loads(result.stdout)["ok"] is True
    with EventStore(tmp_path / "events.sqlite3") as db:
        assert db.count() == 1


def test_selftest_failure_exits_5(tmp_path: Path, monkeypatch):
    from codeintegrity.events import selftest as module

    real = module.run_selftest
    monkeypatch.setattr(module, "run_selftest", lambda: real((("SHA-1", lambda: "bad"),)))
    result = CliRunner().invoke(selftest, ["--store", str(tmp_path / "s.sqlite3")])
    assert result.exit_code == exit_codes.SELFTEST_FAILED
    assert "self-test FAILED: return code 0x1" in result.output
    with EventStore(tmp_path / "s.sqlite3") as db:
        (event,) = db.query()
    assert event.value("ReturnCode") == "0x1"


def test_piped_table_is_wide_and_prints_brackets_verbatim(tmp_path: Path):
    # Longer than 80 columns with rich markup look-alikes: must be one line, unchanged.
    long_path = "/srv/[x86]/" + "deep/" * 14 + "[bold]evil[/bold] [red]x[/].exe"
    path = tmp_path / "events.sqlite3"
    with EventStore(path) as db:
        db.append(events_for_report(tampered_report(long_path), host=HOST))
    result = run("--store", str(path))
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if long_path in line]
    assert len(lines) == 4  # 3089, 3033, 5038, 6281: each row on one unfolded line
    assert all(len(line) > 80 for line in lines)
    assert "4 event(s)" in result.stdout
