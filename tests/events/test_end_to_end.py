"""The real engine on the signed/tampered fixtures, through the event pipeline."""

from __future__ import annotations

import hashlib
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from codeintegrity.events.build import Host, events_for_report
from codeintegrity.events.pipeline import open_pipeline
from codeintegrity.events.render_ecs import to_ecs
from codeintegrity.events.render_xml import render_xml

from ..conftest import FIXTURES, PKI

verify = pytest.importorskip("codeintegrity.verify", reason="the engine is not built yet")
trust = pytest.importorskip("codeintegrity.authenticode.trust", reason="trust not built yet")

NS = "{http://schemas.microsoft.com/win/2004/08/events/event}"
HOST = Host(computer="E2E", process_id=1, process_name="codeintegrity", user_name="ci")


@pytest.fixture(scope="module")
def options():
    from codeintegrity.options import VerifyOptions

    return VerifyOptions(
        trust=trust.TrustStore.from_paths([str(PKI / "ca.pem")]),
        flat_digests=frozenset({"sha256"}),
    )


def tbs_sha256(pem: Path) -> str:
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(pem.read_bytes())
    return hashlib.sha256(cert.tbs_certificate_bytes).hexdigest().upper()


def test_tampered_fixture_raises_5038_and_6281_with_signature_details(options):
    report = verify.verify_path(str(FIXTURES / "bad_flip_text.exe"), options)
    events = events_for_report(report, host=HOST)
    assert [e.event_id for e in events] == [3033, 3089, 5038, 6281]
    info = events[1]
    assert info.value("PublisherName") == "Throwaway Test Publisher"
    assert info.value("PublisherTBSHash") == tbs_sha256(PKI / "leaf.pem")
    assert info.value("IssuerTBSHash") == tbs_sha256(PKI / "ca.pem")
    assert info.value("VerificationError") == "1"
    assert info.value("PageHash") == "true"
    root = ET.fromstring(render_xml(events[2]))
    assert root.find(f"{NS}System/{NS}Keywords").text == "0x8010000000000000"
    assert root.find(f"{NS}EventData/{NS}Data").text == str(FIXTURES / "bad_flip_text.exe")
    doc = to_ecs(events[3])
    assert doc["winlog"]["event_id"] == "6281"
    flat = hashlib.sha256((FIXTURES / "bad_flip_text.exe").read_bytes()).hexdigest()
    assert doc["file"]["hash"]["sha256"] == flat
    assert doc["file"]["code_signature"]["valid"] is False


def test_shared_writable_fixture_raises_6410_with_3063(options):
    report = verify.verify_path(str(FIXTURES / "t64_shared_writable_resigned.exe"), options)
    events = events_for_report(report, host=HOST)
    assert [e.event_id for e in events if e.channel == "Security"] == [6410]
    assert 3063 in [e.event_id for e in events]


def test_valid_fixture_raises_nothing_and_pipeline_records_the_rest(options, tmp_path: Path):
    jsonl = tmp_path / "e.jsonl"
    store = tmp_path / "s.sqlite3"
    names = ["t64_sha256_ph.exe", "bad_flip_text.exe", "bad_pagehash_only_sha256.exe"]
    with open_pipeline([f"jsonl:{jsonl}"], store_path=str(store)) as pipeline:
        counts = [
            pipeline.emit_report(verify.verify_path(str(FIXTURES / n), options)) for n in names
        ]
    assert counts[0] == 0
    docs = [json.loads(line) for line in jsonl.read_text().splitlines()]
    security = [
        (d["winlog"]["event_id"], d["file"]["name"])
        for d in docs
        if d["winlog"]["channel"] == "Security"
    ]
    assert ("5038", "bad_flip_text.exe") in security
    assert ("6281", "bad_pagehash_only_sha256.exe") in security
    assert ("5038", "bad_pagehash_only_sha256.exe") not in security  # image hash is fine there
    assert all(name != "t64_sha256_ph.exe" for _, name in security)
