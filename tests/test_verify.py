"""The engine end to end on the corpus: every fixture gives the findings and events the corpus
README expects, and every real signed sample is valid."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from codeintegrity.findings import FindingCode as C
from codeintegrity.options import VerifyOptions
from codeintegrity.report import Check, Status
from codeintegrity.verify import verify_bytes, verify_path

from .conftest import FIXTURES, SAMPLES, SHARED_CORPUS, SIGNIFY


def judge(name: str, trust, **kw):
    return verify_path(FIXTURES / name, VerifyOptions(trust=trust, **kw))


def codes(report):
    return {f.code for f in report.findings}


GOOD = [
    "t64_sha256.exe",
    "t64_sha256_ph.exe",
    "t64_sha1_ph.exe",
    "cli32_sha256_ph.exe",
    "ossl_sha256_ph.exe",
    "t64_sha256_ph_ts.exe",
    "t64_nested_sha1+sha256ph.exe",
    "ok_flip_checksum.exe",
    "fbx64_sbsign.efi",
    "fbx64_osslsign.efi",
]


@pytest.mark.parametrize("name", GOOD)
def test_good_fixtures_are_valid(name, fixture_trust):
    report = judge(name, fixture_trust)
    assert report.status is Status.VALID, report.findings
    assert report.event_ids == []
    assert report.signatures and all(s.valid and s.trusted for s in report.signatures)
    assert all(s.image_hash is Check.VALID for s in report.signatures)


def test_page_hash_presence_is_reported(fixture_trust):
    with_ph = judge("t64_sha256_ph.exe", fixture_trust).signatures[0]
    without = judge("t64_sha256.exe", fixture_trust).signatures[0]
    assert (with_ph.page_hashes, with_ph.page_hash_algorithm) == (Check.VALID, "sha256")
    assert without.page_hashes is Check.ABSENT
    sha1 = judge("t64_sha1_ph.exe", fixture_trust).signatures[0]
    assert (sha1.digest_algorithm, sha1.page_hash_algorithm) == ("sha1", "sha1")


def test_rfc3161_timestamp(fixture_trust):
    sig = judge("t64_sha256_ph_ts.exe", fixture_trust).signatures[0]
    assert sig.timestamp == datetime(2026, 1, 1, 0, 1, tzinfo=UTC)
    assert sig.timestamp_kind == "rfc3161"


def test_nested_signature(fixture_trust):
    report = judge("t64_nested_sha1+sha256ph.exe", fixture_trust)
    first, second = report.signatures
    assert (first.index, first.parent, first.digest_algorithm) == (0, None, "sha1")
    assert (second.index, second.parent, second.digest_algorithm) == (1, 0, "sha256")
    assert second.page_hashes is Check.VALID


@pytest.mark.parametrize("name", ["bad_flip_text.exe", "bad_flip_rdata.exe"])
def test_flipped_section_byte(name, fixture_trust):
    report = judge(name, fixture_trust)
    assert report.status is Status.INVALID
    assert report.event_ids == [5038, 6281]
    pages = [f for f in report.findings if f.code is C.PAGE_HASH_MISMATCH]
    assert len(pages) == 1 and pages[0].offset is not None and pages[0].page is not None
    assert report.signatures[0].image_hash is Check.INVALID


def test_nested_flipped_section_byte(fixture_trust):
    report = judge("bad_nested_flip_text.exe", fixture_trust)
    assert report.event_ids == [5038, 6281]
    assert {f.signature for f in report.findings if f.code is C.IMAGE_HASH_MISMATCH} == {0, 1}
    pages = [f for f in report.findings if f.code is C.PAGE_HASH_MISMATCH]
    assert len(pages) == 1 and pages[0].signature == 1


def test_overlay_flip_breaks_image_hash_only(fixture_trust):
    report = judge("bad_flip_overlay_pagehash_ok.exe", fixture_trust)
    assert report.event_ids == [5038]
    assert report.signatures[0].page_hashes is Check.VALID


@pytest.mark.parametrize("name", ["bad_pagehash_only_sha256.exe", "bad_pagehash_only_sha1.exe"])
def test_page_hash_only_failure(name, fixture_trust):
    report = judge(name, fixture_trust)
    assert report.event_ids == [6281]
    sig = report.signatures[0]
    assert sig.image_hash is Check.VALID and sig.signature_valid
    assert sig.page_hashes is Check.INVALID


def test_flipped_signature_blob(fixture_trust):
    report = judge("bad_flip_sigblob.exe", fixture_trust)
    assert report.event_ids == [5038]
    assert C.SIGNATURE_INVALID in codes(report)
    assert report.signatures[0].image_hash is Check.VALID


def test_data_after_certificate_table(fixture_trust):
    report = judge("bad_append_after_cert.exe", fixture_trust)
    assert report.status is Status.INVALID
    assert C.CERT_TABLE_NOT_AT_END in codes(report)
    assert 5038 in report.event_ids


@pytest.mark.parametrize("name", ["q_pad_certdir.exe", "q_pad_wincert.exe"])
def test_certificate_padding(name, fixture_trust):
    report = judge(name, fixture_trust)
    assert C.CERT_TABLE_PADDING in codes(report)
    assert report.status is Status.VALID  # Windows' default: EnableCertPaddingCheck off
    strict = judge(name, fixture_trust, cert_padding_check=True)
    assert strict.status is Status.INVALID and strict.event_ids == [5038]


def test_truncated_certificate_table_is_malformed_not_unsigned(fixture_trust):
    report = judge("bad_truncate_cert.exe", fixture_trust)
    assert report.status is Status.MALFORMED
    assert 5038 in report.event_ids


def test_shared_writable_section(fixture_trust):
    resigned = judge("t64_shared_writable_resigned.exe", fixture_trust)
    assert resigned.signatures[0].valid
    assert resigned.event_ids == [6410]
    assert resigned.status is Status.INVALID
    tampered = judge("bad_shared_writable_not_resigned.exe", fixture_trust)
    # The flag lives in the section table, inside the header page: that page's hash breaks too.
    assert tampered.event_ids == [5038, 6281, 6410]
    pages = [f for f in tampered.findings if f.code is C.PAGE_HASH_MISMATCH]
    assert [(f.page, f.offset) for f in pages] == [(0, 0)]


@pytest.mark.parametrize(
    "name", ["unsigned_removed.exe", "unsigned_zero_secdir.exe", "fbx64_unsigned.efi"]
)
def test_unsigned(name, fixture_trust):
    report = judge(name, fixture_trust)
    assert report.status is Status.UNSIGNED
    assert report.signatures == () and report.event_ids == []


def test_tampered_efi(fixture_trust):
    report = judge("bad_fbx64_sbsign_flip_text.efi", fixture_trust)
    assert report.status is Status.INVALID and report.event_ids == [5038]


@pytest.mark.parametrize(
    ("name", "bad_algorithm"),
    [
        ("sigcheck_bad_sha1_indirect_digest.exe", "sha1"),
        ("sigcheck_bad_sha256_indirect_digest.exe", "sha256"),
    ],
)
def test_dual_signed_names_the_bad_signature(name, bad_algorithm, sample_trust):
    report = verify_path(FIXTURES / name, VerifyOptions(trust=sample_trust))
    assert report.status is Status.INVALID and 5038 in report.event_ids
    bad = [s for s in report.signatures if not s.valid]
    good = [s for s in report.signatures if s.valid]
    assert [s.digest_algorithm for s in bad] == [bad_algorithm]
    assert len(good) == 1
    flagged = {f.signature for f in report.findings if f.event_id == 5038}
    assert flagged == {bad[0].index}


def test_require_page_hashes(fixture_trust):
    report = judge("t64_sha256.exe", fixture_trust, require_page_hashes="all")
    assert report.event_ids == [6281]
    assert C.PAGE_HASHES_REQUIRED in codes(report)
    assert judge("t64_sha256_ph.exe", fixture_trust, require_page_hashes="all").ok


def test_untrusted_without_anchor():
    from codeintegrity.authenticode.trust import TrustStore

    report = judge("t64_sha256.exe", TrustStore.default())
    assert report.status is Status.INVALID
    assert C.CHAIN_UNTRUSTED in codes(report)
    assert report.signatures[0].image_hash is Check.VALID


def test_judged_before_certificate_validity(fixture_trust):
    report = judge("t64_sha256.exe", fixture_trust, at=datetime(2024, 6, 1, tzinfo=UTC))
    assert report.status is Status.INVALID and C.CHAIN_NOT_YET_VALID in codes(report)


# --- real files -------------------------------------------------------------------------------

SIGNED = sorted(p for p in (SAMPLES / "signed").rglob("*") if p.is_file())
LARGE = sorted(p for p in (SHARED_CORPUS / "samples" / "signed").rglob("*") if p.is_file())
LARGE = [p for p in LARGE if p.stat().st_size > 1_500_000]


@pytest.mark.parametrize("path", SIGNED + LARGE, ids=lambda p: p.name)
def test_real_signed_samples_are_valid(path, sample_trust):
    report = verify_path(path, VerifyOptions(trust=sample_trust))
    assert report.status is Status.VALID, [f.to_dict() for f in report.findings]
    assert report.event_ids == []


def test_cve_2020_0601_spoofed_chain_fails():
    report = verify_path(SIGNIFY / "7z1900-x64_signed.exe")
    assert report.status is Status.INVALID
    assert not any(s.trusted for s in report.signatures)
    assert 5038 in report.event_ids


def test_expired_signer_with_earlier_timestamp_is_valid():
    report = verify_path(SIGNIFY / "spotify_sample.exe")
    assert report.status is Status.VALID
    assert report.signatures[0].timestamp is not None


def test_authentihashes_match_signify_oracle():
    expected = json.loads((SIGNIFY / "fingerprint_results.json").read_text())
    checked = 0
    for key, value in expected.items():
        path = SIGNIFY / key
        if not path.is_file() or "authentihash" not in value:
            continue
        report = verify_path(
            path, VerifyOptions(extra_digests=frozenset({"md5", "sha1", "sha256"}))
        )
        for alg in ("md5", "sha1", "sha256"):
            assert report.authentihash[alg] == value["authentihash"][alg], (key, alg)
        checked += 1
    assert checked >= 5


def test_windivert_authentihash_is_in_loldrivers():
    import csv

    path = SAMPLES / "signed" / "pypi__pydivert-4.0.1-py3-none-win_amd64" / "WinDivert64.sys"
    report = verify_path(path)
    assert report.status is Status.VALID
    known: set[str] = set()
    with (SAMPLES.parent / "policy" / "loldrivers-drivers.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            cell = row.get("KnownVulnerableSamples_Authentihash_SHA256") or ""
            known.update(h.strip().lower() for h in cell.split(",") if h.strip())
    assert report.authentihash["sha256"] in known


def test_unsigned_padding_variants():
    data = (FIXTURES / "unsigned_removed.exe").read_bytes() + b"\x01\x02\x03"
    report = verify_bytes(data)
    assert report.status is Status.UNSIGNED
    assert report.authentihash["sha256"] != report.authentihash_unpadded["sha256"]


def test_not_a_pe_is_malformed():
    report = verify_bytes(b"hello, world")
    assert report.status is Status.MALFORMED
    assert report.findings[0].code is C.IMAGE_MALFORMED
