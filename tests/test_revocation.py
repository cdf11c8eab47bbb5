"""Revocation with Windows timestamp semantics, using CRLs made by `openssl ca` at test time.

The CRLs come from the throwaway test CA (tests/data/pki): `openssl ca -revoke` records the
publisher certificate in a CA database, the revocation date in that database is set to the
date under test (the database is openssl's own record of when a certificate was revoked), and
`openssl ca -gencrl` signs the CRL. Needs the `openssl` command (apt package openssl).
"""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from asn1crypto import pem, x509

from codeintegrity.errors import PolicyError
from codeintegrity.findings import EVENT_PAGE_HASH, FindingCode
from codeintegrity.revocation import RevocationSources, cert_identifiers, check_chain

from .conftest import FIXTURES, PKI

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")

CA_SUBJECT = "/CN=Throwaway Test Code Signing Root CA/O=corpus-fixtures"
TIMESTAMP = datetime(2026, 1, 1, 0, 1, tzinfo=UTC)  # of fixtures/t64_sha256_ph_ts.exe
BEFORE_TS = "251201000000Z"
AFTER_TS = "260601000000Z"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _load_cert(name: str) -> x509.Certificate:
    _, _, der = pem.unarmor((PKI / name).read_bytes())
    return x509.Certificate.load(der)


@pytest.fixture(scope="module")
def forged_ca(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed CA with the test CA's exact name but another key."""
    work = tmp_path_factory.mktemp("forged")
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "fake.key",
        "-out", "fake.pem", "-subj", CA_SUBJECT, "-days", "3650", cwd=work,
    )  # fmt: skip
    return work / "fake.pem", work / "fake.key"


@pytest.fixture(scope="module")
def make_crl(tmp_path_factory):
    counter = iter(range(1000))

    def make(
        revoked: dict[str, str], *, signer: tuple[Path, Path] | None = None, der: bool = False
    ) -> Path:
        work = tmp_path_factory.mktemp(f"crl{next(counter)}")
        shutil.copy(PKI / "ca.cnf", work / "ca.cnf")
        (work / "index.txt").write_text("")
        cert, key = signer or (PKI / "ca.pem", PKI / "ca.key")
        common = ("-config", "ca.cnf", "-cert", str(cert), "-keyfile", str(key))
        for name in revoked:
            _openssl("ca", *common, "-revoke", str(PKI / name), cwd=work)
        # Set each revocation date in the CA database, then let openssl sign the CRL.
        serials = {f"{_load_cert(name).serial_number:02X}": date for name, date in revoked.items()}
        rows = []
        for row in (work / "index.txt").read_text().splitlines():
            fields = row.split("\t")
            fields[2] = serials[fields[3]]
            rows.append("\t".join(fields))
        (work / "index.txt").write_text("\n".join(rows) + ("\n" if rows else ""))
        _openssl("ca", *common, "-gencrl", "-crldays", "3650", "-out", "crl.pem", cwd=work)
        if not der:
            return work / "crl.pem"
        _openssl("crl", "-in", "crl.pem", "-outform", "DER", "-out", "crl.der", cwd=work)
        return work / "crl.der"

    return make


CHAIN = (_load_cert("leaf.pem"), _load_cert("ca.pem"))


def codes(findings):
    return [f.code for f in findings]


def test_revoked_before_the_timestamp_is_revoked(make_crl):
    sources = RevocationSources.load([make_crl({"leaf.pem": BEFORE_TS})])
    found = check_chain(sources, CHAIN, timestamp=TIMESTAMP, lifetime_signing=False, signature=0)
    revoked = [f for f in found if f.code is FindingCode.CHAIN_REVOKED]
    assert len(revoked) == 1
    assert revoked[0].event_id == EVENT_PAGE_HASH == 6281
    assert revoked[0].signature == 0
    assert "2025-12-01T00:00:00Z" in revoked[0].detail


def test_revoked_after_a_valid_timestamp_stays_valid(make_crl):
    sources = RevocationSources.load([make_crl({"leaf.pem": AFTER_TS})])
    found = check_chain(sources, CHAIN, timestamp=TIMESTAMP, lifetime_signing=False, signature=0)
    assert FindingCode.CHAIN_REVOKED not in codes(found)
    assert FindingCode.REVOCATION_UNKNOWN not in codes(found)


def test_revoked_without_timestamp_is_revoked(make_crl):
    sources = RevocationSources.load([make_crl({"leaf.pem": AFTER_TS})])
    found = check_chain(sources, CHAIN, timestamp=None, lifetime_signing=False, signature=2)
    assert [(f.code, f.signature) for f in found] == [(FindingCode.CHAIN_REVOKED, 2)]
    assert "no valid timestamp" in found[0].detail


def test_lifetime_signing_ignores_the_timestamp(make_crl):
    sources = RevocationSources.load([make_crl({"leaf.pem": AFTER_TS})])
    found = check_chain(sources, CHAIN, timestamp=TIMESTAMP, lifetime_signing=True, signature=0)
    assert codes(found) == [FindingCode.CHAIN_REVOKED]
    assert "lifetime-signing" in found[0].detail


def test_revocation_date_equal_to_timestamp_counts_as_before(make_crl):
    sources = RevocationSources.load([make_crl({"leaf.pem": "260101000100Z"})])
    found = check_chain(sources, CHAIN, timestamp=TIMESTAMP, lifetime_signing=False, signature=0)
    assert codes(found) == [FindingCode.CHAIN_REVOKED]


def test_crl_signed_by_another_key_is_ignored_and_reported_unknown(make_crl, forged_ca):
    forged = RevocationSources.load([make_crl({"leaf.pem": BEFORE_TS}, signer=forged_ca)])
    # Precondition: the forged CRL names exactly the real issuer, so only the key differs.
    assert forged.crls[0].issuer_der == CHAIN[1].subject.dump()
    found = check_chain(forged, CHAIN, timestamp=None, lifetime_signing=False, signature=0)
    assert codes(found) == [FindingCode.REVOCATION_UNKNOWN]
    assert "does not verify" in found[0].detail


def test_other_certificates_on_the_crl_do_not_revoke(make_crl):
    sources = RevocationSources.load([make_crl({"leaf2.pem": BEFORE_TS})])
    found = check_chain(sources, CHAIN, timestamp=None, lifetime_signing=False, signature=0)
    assert codes(found) == []


def test_der_and_pem_crls_load_alike(make_crl):
    pem_sources = RevocationSources.load([make_crl({"leaf.pem": BEFORE_TS})])
    der_sources = RevocationSources.load([make_crl({"leaf.pem": BEFORE_TS}, der=True)])
    for sources in (pem_sources, der_sources):
        found = check_chain(sources, CHAIN, timestamp=None, lifetime_signing=False, signature=0)
        assert codes(found) == [FindingCode.CHAIN_REVOKED]


def test_no_crl_for_the_issuer_is_unknown_not_revoked(make_crl):
    sources = RevocationSources.load([make_crl({"leaf.pem": BEFORE_TS})])
    tsa_chain = (_load_cert("tsa.pem"), _load_cert("tsaca.pem"))
    found = check_chain(sources, tsa_chain, timestamp=None, lifetime_signing=False, signature=0)
    assert codes(found) == [FindingCode.REVOCATION_UNKNOWN]


def test_chain_without_issuer_cannot_verify_a_crl(make_crl):
    sources = RevocationSources.load([make_crl({"leaf.pem": BEFORE_TS})])
    found = check_chain(sources, CHAIN[:1], timestamp=None, lifetime_signing=False, signature=0)
    assert codes(found) == [FindingCode.REVOCATION_UNKNOWN]


def test_disallowed_thumbprint_and_tbs_hash():
    ca_ids = cert_identifiers(CHAIN[1])
    leaf_ids = cert_identifiers(CHAIN[0])
    # The TBS hash is the SHA-256 of the DER tbsCertificate (the CA signs with SHA-256).
    assert (
        leaf_ids["tbs hash"]
        == __import__("hashlib").sha256(CHAIN[0]["tbs_certificate"].dump()).hexdigest()
    )
    for disallowed in ([ca_ids["sha1 thumbprint"].upper()], [leaf_ids["tbs hash"]]):
        sources = RevocationSources.from_bytes((), disallowed)
        found = check_chain(
            sources, CHAIN, timestamp=TIMESTAMP, lifetime_signing=False, signature=1
        )
        assert codes(found) == [FindingCode.POLICY_CERT_DISALLOWED]
        assert found[0].event_id == 6281


def test_certutil_spaced_thumbprint_is_accepted():
    sha1 = cert_identifiers(CHAIN[0])["sha1 thumbprint"]
    spaced = " ".join(sha1[i : i + 2] for i in range(0, 40, 2))
    assert RevocationSources.from_bytes((), [spaced]).disallowed == {sha1}


@pytest.mark.parametrize("bad", ["xyz", "00" * 19, ""])
def test_bad_disallowed_value_is_rejected(bad):
    with pytest.raises(PolicyError, match="disallowed certificate"):
        RevocationSources.from_bytes((), [bad])


def test_bad_crl_files_give_one_line_errors(tmp_path):
    garbage = tmp_path / "garbage.crl"
    garbage.write_bytes(b"\x30\x03\x02\x01\x01")
    with pytest.raises(PolicyError, match=r"garbage\.crl: not a valid X\.509 CRL") as info:
        RevocationSources.load([garbage])
    assert "\n" not in str(info.value)
    pem_without_crl = tmp_path / "cert.pem"
    pem_without_crl.write_bytes((PKI / "ca.pem").read_bytes())
    with pytest.raises(PolicyError, match="no 'BEGIN X509 CRL'"):
        RevocationSources.load([pem_without_crl])
    with pytest.raises(PolicyError, match="cannot read CRL"):
        RevocationSources.load([tmp_path / "missing.crl"])


# --- end to end through the engine ---------------------------------------------------------


def _verify(name: str, sources: RevocationSources, trust):
    from codeintegrity.options import VerifyOptions
    from codeintegrity.verify import verify_path

    return verify_path(FIXTURES / name, VerifyOptions(trust=trust, revocation=sources))


def test_engine_revoked_before_timestamp_raises_6281(make_crl, fixture_trust):
    sources = RevocationSources.load([make_crl({"leaf.pem": BEFORE_TS})])
    report = _verify("t64_sha256_ph_ts.exe", sources, fixture_trust)
    assert report.signatures[0].timestamp == TIMESTAMP
    assert report.status.value == "invalid"
    assert FindingCode.CHAIN_REVOKED in codes(report.findings)
    assert 6281 in report.event_ids


def test_engine_revoked_after_timestamp_is_valid(make_crl, fixture_trust):
    sources = RevocationSources.load([make_crl({"leaf.pem": AFTER_TS})])
    report = _verify("t64_sha256_ph_ts.exe", sources, fixture_trust)
    assert report.status.value == "valid", report.findings
    assert FindingCode.CHAIN_REVOKED not in codes(report.findings)


def test_engine_revoked_without_timestamp_raises_6281(make_crl, fixture_trust):
    sources = RevocationSources.load([make_crl({"leaf.pem": AFTER_TS})])
    report = _verify("t64_sha256_ph.exe", sources, fixture_trust)
    assert report.signatures[0].timestamp is None
    assert report.status.value == "invalid"
    assert 6281 in report.event_ids


def test_engine_forged_crl_is_ignored(make_crl, forged_ca, fixture_trust):
    sources = RevocationSources.load([make_crl({"leaf.pem": BEFORE_TS}, signer=forged_ca)])
    report = _verify("t64_sha256_ph.exe", sources, fixture_trust)
    assert report.status.value == "valid"
    assert FindingCode.REVOCATION_UNKNOWN in codes(report.findings)
