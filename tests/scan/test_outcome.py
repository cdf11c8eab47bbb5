"""Encoded outcomes: a report that travels as its JSON text (from a worker or the results
cache) prints, counts and decodes exactly as the report itself."""

from __future__ import annotations

import json
import pickle
import shutil
from dataclasses import replace

import pytest

from codeintegrity.options import VerifyOptions
from codeintegrity.report import Decision
from codeintegrity.results_cache import ResultsCache
from codeintegrity.scan import run as run_module
from codeintegrity.scan.outcome import Judged, counts_as_failure, encode_report, outcome_line
from codeintegrity.scan.run import Judge
from codeintegrity.scan.tally import Tally
from codeintegrity.scan.walk import Target
from codeintegrity.verify import verify_path

from ..conftest import FIXTURES


def _fixture_reports(trust):
    options = VerifyOptions(trust=trust)
    paths = sorted(p for p in FIXTURES.iterdir() if p.is_file())
    assert len(paths) > 20
    return [verify_path(p, options) for p in paths]


def test_encoded_reports_print_count_and_decode_as_the_report(fixture_trust):
    reports = _fixture_reports(fixture_trust)
    assert {str(r.status) for r in reports} >= {"valid", "invalid", "unsigned", "malformed"}
    plain_tally, encoded_tally = Tally(), Tally()
    for report in reports:
        plain = Judged(report)
        encoded = Judged(encoded=encode_report(report), path=report.path)
        assert encoded.json_line() == plain.json_line() == outcome_line(plain)
        assert (encoded.status, encoded.event_ids, encoded.ok) == (
            plain.status,
            plain.event_ids,
            plain.ok,
        )
        assert counts_as_failure(encoded) == counts_as_failure(plain)
        assert encoded.raises_events == bool(report.event_ids)
        assert encoded.report == report  # decoded on demand, equal field by field
        plain_tally.add(plain)
        encoded_tally.add(encoded)
    assert encoded_tally.statuses == plain_tally.statuses
    assert encoded_tally.events == plain_tally.events
    assert encoded_tally.exit_status() == plain_tally.exit_status()


def test_one_text_serves_any_path(fixture_trust):
    report = _fixture_reports(fixture_trust)[0]
    encoded = encode_report(report)
    for path in ('/a "quoted"\\ path', "/ünïcode/файл.exe", "C:\\Windows\\x.sys"):
        line = Judged(encoded=encoded, path=path).json_line()
        assert json.loads(line) == replace(report, path=path).to_dict()


def test_a_decision_is_never_encoded(fixture_trust):
    report = _fixture_reports(fixture_trust)[0]
    decision = Decision(allowed=False, mode="enforce", policy_name="p", policy_id="p")
    decided = replace(report, decision=decision)
    encoded = encode_report(decided)
    assert json.loads(encoded.text)["decision"] is None
    assert Judged(decided).decision == decision
    assert json.loads(Judged(decided).json_line())["decision"]["allowed"] is False


def test_encoded_outcome_crosses_a_pipe_still_encoded(fixture_trust):
    report = _fixture_reports(fixture_trust)[0]
    sent = Judged(encoded=encode_report(report), path=report.path, seconds=0.5, size=7)
    got = pickle.loads(pickle.dumps(sent))
    assert got._report is None  # not decoded on the way
    assert (got.path, got.seconds, got.size, got.json_line()) == (
        sent.path,
        0.5,
        7,
        sent.json_line(),
    )


@pytest.fixture
def cached_judge(tmp_path, fixture_trust):
    cache = ResultsCache.open(str(tmp_path / "results.sqlite3"), racy_window_ns=0)
    yield Judge(VerifyOptions(trust=fixture_trust), cache=cache)
    cache.close()


def test_a_cache_hit_is_answered_without_opening_or_decoding(cached_judge, tmp_path, monkeypatch):
    names = sorted(p.name for p in FIXTURES.iterdir() if p.is_file())[:6]
    tree = tmp_path / "tree"
    tree.mkdir()
    for name in names:
        shutil.copyfile(FIXTURES / name, tree / name)
    targets = [Target(str(tree / n), True, (tree / n).stat().st_size) for n in names]
    first = [cached_judge(t) for t in targets]
    assert all(isinstance(o, Judged) for o in first)

    def no_sniffing(path: str) -> bool:
        raise AssertionError(f"{path} was opened on a cache hit")

    monkeypatch.setattr(run_module, "starts_with_mz", no_sniffing)
    again = [cached_judge(t) for t in targets]
    assert cached_judge.cache.hits == len(targets)
    for before, after in zip(first, again, strict=True):
        assert isinstance(after, Judged) and after.encoded is not None
        assert after._report is None
        assert after.json_line() == before.json_line()


def test_damaged_summary_columns_are_dropped_and_judged_again(cached_judge, tmp_path):
    import sqlite3

    path = tmp_path / "f.exe"
    shutil.copyfile(sorted(p for p in FIXTURES.iterdir() if p.is_file())[0], path)
    target = Target(str(path), False, path.stat().st_size)
    first = cached_judge(target)
    cached_judge.cache.flush()
    conn = sqlite3.connect(cached_judge.cache.path)
    conn.execute("UPDATE results SET status = 'fine'")
    conn.commit()
    conn.close()
    warnings: list[str] = []
    cached_judge.cache._warn = warnings.append
    again = cached_judge(target)
    assert isinstance(again, Judged) and isinstance(first, Judged)
    assert again.json_line() == first.json_line()
    assert cached_judge.cache.hits == 0 and cached_judge.cache.misses == 2
    assert len(warnings) == 1 and "damaged results cache entry dropped" in warnings[0]


def test_cache_hits_are_not_listed_among_the_slowest_files(fixture_trust):
    reports = _fixture_reports(fixture_trust)[:3]
    tally = Tally()
    tally.add(Judged(reports[0], 0.25, 10))  # judged in this run
    for report in reports[1:]:  # answered from the results cache
        tally.add(Judged(encoded=encode_report(report), path=report.path, size=10))
    assert tally.slowest == [(0.25, reports[0].path)]
    assert "3 judged" in tally.detail_lines()[0]
