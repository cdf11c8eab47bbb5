"""verify_signer / verify_signed_data against real signed files, fixtures and peer test data."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from asn1crypto import cms

from codeintegrity.authenticode import chaincache, oids
from codeintegrity.authenticode.signer import verify_signed_data, verify_signer
from codeintegrity.authenticode.trust import TrustStore
from codeintegrity.findings import FindingCode, Severity

from .conftest import CORPUS_SIGNED, DATA, FIXTURES, PKI, SIGNIFY, signatures_of

SIGNED = sorted(p for p in (DATA / "samples" / "signed").glob("*/*") if p.is_file())
# Larger real files stay in the shared corpus; read them from there when present.
_LOCAL = {(p.parent.name, p.name) for p in SIGNED}
CORPUS_ONLY = sorted(
    p for p in CORPUS_SIGNED.glob("*/*") if p.is_file() and (p.parent.name, p.name) not in _LOCAL
)


def _codes(verdict) -> list[FindingCode]:
    return [f.code for f in verdict.findings]


def _errors(verdict) -> list[FindingCode]:
    return [f.code for f in verdict.findings if f.severity is Severity.ERROR]


def _verdicts(path: Path, store: TrustStore, at: datetime | None = None):
    return [verify_signer(s, store, at=at) for s in signatures_of(path)]


@pytest.mark.parametrize("path", SIGNED + CORPUS_ONLY, ids=lambda p: p.name)
def test_real_signed_samples_verify(path, full_store):
    verdicts = _verdicts(path, full_store)
    assert verdicts
    for verdict in verdicts:
        assert verdict.signature_valid and verdict.trusted, verdict.findings
        assert _errors(verdict) == []
        assert verdict.chain and verdict.chain[0] == verdict.signer
        assert verdict.chain_certs[-1] in full_store  # ends at a whole-certificate anchor


def test_windivert_legacy_countersignature(full_store):
    path = DATA / "samples/signed/pypi__pydivert-4.0.1-py3-none-win_amd64/WinDivert64.sys"
    primary, nested = _verdicts(path, full_store)
    assert primary.timestamp_kind == "pkcs9"
    assert primary.timestamp == datetime(2022, 9, 20, 4, 54, 19, tzinfo=UTC)
    assert nested.timestamp_kind == "rfc3161"
    # The EV leaf expired in 2023: only the timestamp keeps it valid today.
    assert primary.signer is not None and primary.signer.not_after < datetime.now(UTC)
    assert primary.trusted and nested.trusted


FIXTURE_VALID = [
    "t64_sha256.exe",
    "t64_sha256_ph.exe",
    "t64_sha1_ph.exe",
    "cli32_sha256_ph.exe",
    "ossl_sha256_ph.exe",
    "fbx64_sbsign.efi",
    "fbx64_osslsign.efi",
    "t64_nested_sha1+sha256ph.exe",
    "t64_sha256_ph_ts.exe",
]


@pytest.mark.parametrize("name", FIXTURE_VALID)
def test_fixtures_verify_with_test_pki(name, pki_store, default_store):
    for verdict in _verdicts(FIXTURES / name, pki_store):
        assert verdict.signature_valid and verdict.trusted, verdict.findings
        assert verdict.signer is not None
        assert verdict.signer.subject.startswith("O=corpus-fixtures,CN=Throwaway Test Publisher")
        assert (
            verdict.chain[-1].subject == "O=corpus-fixtures,CN=Throwaway Test Code Signing Root CA"
        )
    for verdict in _verdicts(FIXTURES / name, default_store):
        assert verdict.signature_valid and not verdict.trusted
        assert FindingCode.CHAIN_UNTRUSTED in _codes(verdict)


def test_rfc3161_timestamp(pki_store):
    (verdict,) = _verdicts(FIXTURES / "t64_sha256_ph_ts.exe", pki_store)
    assert verdict.timestamp == datetime(2026, 1, 1, 0, 1, tzinfo=UTC)
    assert verdict.timestamp_kind == "rfc3161"
    assert verdict.findings == ()


def test_timestamp_extends_validity_past_expiry(pki_store):
    after_expiry = datetime(2050, 1, 1, tzinfo=UTC)  # the test PKI ends 2045-01-01
    (stamped,) = _verdicts(FIXTURES / "t64_sha256_ph_ts.exe", pki_store, at=after_expiry)
    assert stamped.trusted and stamped.findings == ()
    (plain,) = _verdicts(FIXTURES / "t64_sha256.exe", pki_store, at=after_expiry)
    assert not plain.trusted and _codes(plain) == [FindingCode.CHAIN_EXPIRED]


def test_at_before_not_before_is_not_yet_valid(pki_store):
    (verdict,) = _verdicts(FIXTURES / "t64_sha256.exe", pki_store, at=datetime(2024, 6, 1))
    assert verdict.signature_valid and not verdict.trusted
    assert _codes(verdict) == [FindingCode.CHAIN_NOT_YET_VALID]
    assert "2024-06-01" in verdict.findings[0].detail
    (later,) = _verdicts(FIXTURES / "t64_sha256.exe", pki_store, at=datetime(2025, 6, 1))
    assert later.trusted


def test_untrusted_tsa_is_ignored_with_warning():
    only_ca = TrustStore.from_paths([PKI / "ca.pem"])
    (verdict,) = _verdicts(FIXTURES / "t64_sha256_ph_ts.exe", only_ca)
    assert verdict.timestamp is None and verdict.trusted
    assert _codes(verdict) == [FindingCode.TIMESTAMP_UNTRUSTED]
    assert verdict.findings[0].severity is Severity.WARNING
    # Without a trusted timestamp, a moment past the leaf's expiry fails the chain.
    (late,) = _verdicts(FIXTURES / "t64_sha256_ph_ts.exe", only_ca, at=datetime(2050, 1, 1))
    assert FindingCode.CHAIN_EXPIRED in _codes(late)


def test_flipped_signature_blob(pki_store):
    (verdict,) = _verdicts(FIXTURES / "bad_flip_sigblob.exe", pki_store)
    assert not verdict.signature_valid
    assert _codes(verdict) == [FindingCode.SIGNATURE_INVALID]
    assert verdict.findings[0].signature == 0


def test_cve_2020_0601_spoofed_chain_is_not_trusted(full_store):
    (verdict,) = _verdicts(SIGNIFY / "7z1900-x64_signed.exe", full_store)
    assert not verdict.trusted
    assert FindingCode.CHAIN_UNTRUSTED in _codes(verdict)


def test_spotify_expired_signer_valid_timestamp(full_store):
    (verdict,) = _verdicts(SIGNIFY / "spotify_sample.exe", full_store)
    assert verdict.signature_valid and verdict.trusted, verdict.findings
    assert verdict.timestamp_kind == "pkcs9"
    assert verdict.signer is not None and verdict.timestamp is not None
    assert verdict.signer.not_before < verdict.timestamp < verdict.signer.not_after
    assert verdict.signer.not_after < datetime.now(UTC)


def test_sigcheck_dual_signed(full_store):
    primary, nested = _verdicts(SIGNIFY / "sigcheck.exe", full_store)
    assert (primary.timestamp_kind, nested.timestamp_kind) == ("pkcs9", "rfc3161")
    for verdict in (primary, nested):
        assert verdict.signature_valid and verdict.trusted and verdict.findings == ()


@pytest.mark.parametrize(
    ("name", "bad_index"),
    [
        ("sigcheck_bad_sha1_indirect_digest.exe", 0),
        ("sigcheck_bad_sha256_indirect_digest.exe", 1),
    ],
)
def test_sigcheck_one_patched_digest(name, bad_index, full_store):
    verdicts = _verdicts(FIXTURES / name, full_store)
    assert len(verdicts) == 2
    bad = [i for i, v in enumerate(verdicts) if not v.signature_valid]
    assert bad == [bad_index]
    assert _codes(verdicts[bad_index]) == [FindingCode.MESSAGE_DIGEST_MISMATCH]
    assert verdicts[bad_index].findings[0].signature == bad_index
    assert verdicts[1 - bad_index].findings == ()


def test_pciide_sys_whql(full_store):
    (verdict,) = _verdicts(SIGNIFY / "pciide.sys", full_store)
    assert verdict.signature_valid and verdict.trusted and verdict.findings == ()
    assert verdict.timestamp_kind == "pkcs9"
    assert verdict.timestamp == datetime(2009, 7, 14, 1, 45, 55, tzinfo=UTC)


def test_kdbazis_needs_its_own_root(full_store):
    # Signed by a private "VirtualKD-Redux CA" that no public root program holds.
    (verdict,) = _verdicts(SIGNIFY / "kdbazis.dll", full_store)
    assert verdict.signature_valid and not verdict.trusted
    assert _codes(verdict) == [FindingCode.CHAIN_UNTRUSTED]
    with_root = full_store | TrustStore.from_paths([SIGNIFY / "kdbazis.dll.crt"])
    (verdict,) = _verdicts(SIGNIFY / "kdbazis.dll", with_root)
    assert verdict.trusted and verdict.findings == ()
    assert verdict.chain[-1].subject == "CN=VirtualKD-Redux CA"


def test_software_update_md5_with_bare_digest_countersignature(full_store):
    # MD5 image digest; the 2008 VeriSign TSA signed the bare MD5 (no DigestInfo), which
    # signify and Windows accept. The publisher chain expired in 2014: the timestamp holds it.
    (verdict,) = _verdicts(SIGNIFY / "SoftwareUpdate.exe", full_store)
    assert verdict.signature_valid and verdict.trusted and verdict.findings == ()
    assert verdict.timestamp_kind == "pkcs9"
    assert verdict.timestamp == datetime(2008, 7, 25, 22, 21, 53, tzinfo=UTC)


def test_whois_rfc3161(full_store):
    (verdict,) = _verdicts(SIGNIFY / "whois.exe", full_store)
    assert verdict.trusted and verdict.findings == ()
    assert verdict.timestamp_kind == "rfc3161"


def test_dxcore_page_hash_signature(full_store):
    (sig,) = signatures_of(SIGNIFY / "DXCore.dll")
    assert sig.page_hash_algorithm == "sha256"
    verdict = verify_signer(sig, full_store)
    assert verdict.trusted and verdict.signature_valid


def test_catalog_signed_data(pki_store):
    info = cms.ContentInfo.load((FIXTURES / "fixtures.cat").read_bytes())
    verdict = verify_signed_data(
        info["content"], index=0, trust=pki_store, at=None, expected_content_type=oids.CTL
    )
    assert verdict.signature_valid and verdict.trusted, verdict.findings
    wrong = verify_signed_data(
        info["content"],
        index=0,
        trust=pki_store,
        at=None,
        expected_content_type=oids.SPC_INDIRECT_DATA,
    )
    assert FindingCode.CONTENT_TYPE_ATTRIBUTE in _codes(wrong)


def test_wrong_eku_is_chain_eku(pki_store):
    (sig,) = signatures_of(FIXTURES / "t64_sha256.exe")
    verdict = verify_signed_data(
        sig.signed_data,
        index=0,
        trust=pki_store,
        at=None,
        expected_content_type=oids.SPC_INDIRECT_DATA,
        eku=oids.EKU_TIME_STAMPING,
    )
    assert verdict.signature_valid and not verdict.trusted
    assert _codes(verdict) == [FindingCode.CHAIN_EKU]


def test_chain_results_are_cached(pki_store):
    chaincache.clear()
    (sig,) = signatures_of(FIXTURES / "t64_sha256.exe")
    first = verify_signer(sig, pki_store, at=datetime(2026, 3, 1))
    assert chaincache.stats() == {"hits": 0, "misses": 1}
    second = verify_signer(sig, pki_store, at=datetime(2027, 3, 1))  # inside the window
    assert chaincache.stats() == {"hits": 1, "misses": 1}
    assert first.chain == second.chain and second.trusted
    expired = verify_signer(sig, pki_store, at=datetime(2046, 1, 1))  # outside: re-validated
    assert chaincache.stats()["misses"] == 2 and not expired.trusted


def test_no_path_failures_are_cached_for_any_moment(default_store):
    chaincache.clear()
    (sig,) = signatures_of(FIXTURES / "t64_sha256.exe")
    first = verify_signer(sig, default_store, at=datetime(2026, 3, 1))
    second = verify_signer(sig, default_store, at=datetime(2030, 3, 1))
    assert chaincache.stats() == {"hits": 1, "misses": 1}
    assert _codes(first) == _codes(second) == [FindingCode.CHAIN_UNTRUSTED]
