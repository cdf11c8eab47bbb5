"""Report.from_dict reads back exactly what to_dict wrote, through real JSON, for real files.

The results cache stores reports as this JSON, so any field lost here would be a field a cached
verdict silently lacks.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from codeintegrity.catalog.index import CatalogIndex
from codeintegrity.errors import MalformedError
from codeintegrity.options import VerifyOptions
from codeintegrity.policy.evaluate import evaluate
from codeintegrity.policy.load import parse_policy
from codeintegrity.report import Check, Report, Status
from codeintegrity.verify import verify_path

from .conftest import FIXTURES, SAMPLES

AT = datetime(2026, 6, 1, tzinfo=UTC)
FIXTURE_FILES = sorted(p for p in FIXTURES.iterdir() if p.is_file())
SAMPLE_FILES = sorted(p for p in (SAMPLES / "signed").rglob("*") if p.is_file())


def through_json(report: Report) -> Report:
    return Report.from_dict(json.loads(json.dumps(report.to_dict())))


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=lambda p: p.name)
def test_fixture_reports_round_trip(path, fixture_trust):
    report = verify_path(path, VerifyOptions(trust=fixture_trust, at=AT, flat_digests={"sha1"}))
    assert through_json(report) == report
    # Serialising the rebuilt report gives the same JSON, byte for byte.
    assert json.dumps(through_json(report).to_dict()) == json.dumps(report.to_dict())


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda p: f"{p.parent.name[:20]}/{p.name}")
def test_sample_reports_round_trip(path, sample_trust):
    report = verify_path(path, VerifyOptions(trust=sample_trust))
    assert report.signatures, "samples/signed holds signed files only"
    assert through_json(report) == report


def test_catalog_and_decision_round_trip(fixture_trust, tmp_path):
    index = CatalogIndex.open(
        [str(FIXTURES / "fixtures.cat")], cache_path=str(tmp_path / "c.sqlite3")
    )
    options = VerifyOptions(trust=fixture_trust, at=AT, catalogs=index)
    report = verify_path(FIXTURES / "cat_member_t64.exe", options)
    assert report.catalog is not None and report.status is Status.VALID
    denied = report.authentihash["sha256"]
    policy = parse_policy(f'name = "p"\nid = "p1"\nmode = "audit"\n[deny]\nhashes = ["{denied}"]\n')
    decided = replace(report, decision=evaluate(report, policy))
    assert decided.decision is not None and decided.decision.reasons
    back = through_json(decided)
    assert back == decided
    assert back.catalog == report.catalog and back.decision == decided.decision
    assert back.event_ids == decided.event_ids


def test_every_status_and_check_value_is_covered(fixture_trust):
    """A guard on the test data: the fixtures above exercise every status and check value, so
    from_dict has read each of them back."""
    reports = [verify_path(p, VerifyOptions(trust=fixture_trust, at=AT)) for p in FIXTURE_FILES]
    assert {r.status for r in reports} == set(Status)
    checks = {c for r in reports for s in r.signatures for c in (s.image_hash, s.page_hashes)}
    assert checks >= {Check.VALID, Check.INVALID, Check.ABSENT}
    assert any(s.timestamp is not None for r in reports for s in r.signatures)
    assert any(s.parent is not None for r in reports for s in r.signatures)


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d.pop("status"), "status"),
        (lambda d: d.update(status="fine"), "status"),
        (lambda d: d["signatures"][0].update(index="0"), "index"),
        (lambda d: d["signatures"][0].update(trusted=1), "trusted"),
        (lambda d: d["signatures"][0].update(index=True), "index"),
        (lambda d: d["signatures"][0].update(signed_digest="zz"), "signed_digest"),
        (lambda d: d["signatures"][0]["chain"][0].update(not_after="soon"), "not_after"),
        (lambda d: d["signatures"][0]["chain"][0].update(ekus=[1]), "ekus"),
        (lambda d: d["findings"].append({"code": "no.such", "detail": ""}), "code"),
        (lambda d: d["findings"].append({"code": "image.malformed", "detail": 3}), "detail"),
        (lambda d: d["authentihash"].update(sha256=5), "authentihash"),
        (lambda d: d["image"].update(machine="x86"), "machine"),
        (lambda d: d.update(signatures={}), "signatures"),
    ],
)
def test_damaged_dicts_raise_malformed_error_naming_the_field(mutate, field, fixture_trust):
    report = verify_path(FIXTURES / "t64_sha256_ph_ts.exe", VerifyOptions(trust=fixture_trust))
    data = json.loads(json.dumps(report.to_dict()))
    data["findings"].append({"code": "image.checksum-mismatch", "detail": "x"})
    mutate(data)
    with pytest.raises(MalformedError) as caught:
        Report.from_dict(data)
    assert caught.value.field == field


@pytest.mark.parametrize("value", [None, [], "report", 3])
def test_non_object_input_is_malformed(value):
    with pytest.raises(MalformedError):
        Report.from_dict(value)


def test_version_info_round_trips_and_is_optional():
    from codeintegrity.report import Report, Status

    info = {"original_file_name": "a.sys", "internal_name": "a", "file_description": "",
            "product_name": "P", "file_version": "1.2.3.4"}  # fmt: skip
    report = Report(path="/x/a.sys", status=Status.UNSIGNED, version_info=info)
    assert report.to_dict()["version_info"] == info
    assert Report.from_dict(report.to_dict()) == report
    old = report.to_dict()
    del old["version_info"]  # a report written before the field existed
    assert Report.from_dict(old).version_info is None
