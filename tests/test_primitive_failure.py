"""A cryptographic primitive that raises during verification yields finding + event 5057."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.exceptions import InternalError

from codeintegrity.events.build import events_for_report
from codeintegrity.findings import FindingCode
from codeintegrity.options import VerifyOptions
from codeintegrity.report import Status
from codeintegrity.verify import verify_path

from .conftest import FIXTURES


def _raise(*_args, **_kwargs):
    raise InternalError("simulated OpenSSL failure", [])


def test_signature_primitive_raising_gives_5057(monkeypatch, fixture_trust):
    import codeintegrity.authenticode.signer as signer

    monkeypatch.setattr(signer, "verify_signer", _raise)
    report = verify_path(FIXTURES / "t64_sha256_ph.exe", VerifyOptions(trust=fixture_trust))
    assert report.status is Status.INVALID
    assert 5057 in report.event_ids
    (finding,) = [f for f in report.findings if f.code is FindingCode.PRIMITIVE_FAILED]
    assert finding.signature == 0 and "InternalError" in finding.detail
    assert not report.signatures[0].valid

    events = events_for_report(report)
    (event,) = [e for e in events if e.event_id == 5057]
    data = dict(event.data)
    assert data["AlgorithmName"] == "sha256"
    assert data["ProviderName"] == "OpenSSL via cryptography"
    assert "simulated OpenSSL failure" in data["Reason"]
    assert data["ReturnCode"] != "0x0" and "param1" not in data


def test_hash_algorithm_refused_gives_5057(monkeypatch, fixture_trust):
    real = hashlib.sha256

    def refused(*args, **kwargs):
        raise ValueError("[digital envelope routines] unsupported")

    monkeypatch.setattr(hashlib, "sha256", refused)
    try:
        report = verify_path(FIXTURES / "t64_sha256.exe", VerifyOptions(trust=fixture_trust))
    finally:
        monkeypatch.setattr(hashlib, "sha256", real)
    assert report.status is Status.INVALID
    assert report.event_ids == [5057]
    assert report.error and "unsupported" in report.error


@pytest.mark.parametrize("name", ["unsigned_removed.exe"])
def test_unsigned_file_whose_hash_fails_still_raises_5057(monkeypatch, name, fixture_trust):
    monkeypatch.setattr(hashlib, "sha256", _raise_value)
    report = verify_path(FIXTURES / name, VerifyOptions(trust=fixture_trust))
    # No signature to call invalid; the failure is the 5057 event and the error line.
    assert report.status is Status.UNSIGNED and report.event_ids == [5057] and report.error


def _raise_value(*_args, **_kwargs):
    raise ValueError("unsupported hash type")
