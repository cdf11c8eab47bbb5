"""TrustStore loading, union, exact anchor matching."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asn1crypto import pem, x509
from cryptography import x509 as cx509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding

from codeintegrity.authenticode.signer import verify_signer
from codeintegrity.authenticode.trust import TrustStore
from codeintegrity.errors import TrustStoreError
from codeintegrity.findings import FindingCode

from .conftest import FIXTURES, PKI, signatures_of


def test_default_store_is_loaded_once():
    store = TrustStore.default()
    assert store is TrustStore.default()
    assert len(store) > 300  # Microsoft's root program has hundreds of roots


def test_from_paths_pem_and_der(tmp_path):
    _kind, _headers, der = pem.unarmor((PKI / "ca.pem").read_bytes())
    der_file = tmp_path / "ca.cer"
    der_file.write_bytes(der)
    from_der = TrustStore.from_paths([der_file])
    from_pem = TrustStore.from_paths([PKI / "ca.pem"])
    assert len(from_der) == len(from_pem) == 1
    assert from_der.key == from_pem.key  # same anchors, same identity
    assert x509.Certificate.load(der) in from_der
    bundle = TrustStore.from_paths([PKI / "tsa-chain.pem"])
    assert len(bundle) == 2


def test_union_and_empty():
    a = TrustStore.from_paths([PKI / "ca.pem"])
    b = TrustStore.from_paths([PKI / "tsaca.pem", PKI / "ca.pem"])
    assert len(a | b) == 2 and len(TrustStore.empty()) == 0
    assert len(a | TrustStore.empty()) == 1


def test_a_store_rebuilt_from_its_ders_has_the_same_anchors():
    store = TrustStore.from_paths([PKI / "tsaca.pem", PKI / "ca.pem"])
    assert sorted(store.ders) == sorted(cert.dump() for cert in store.certificates)
    rebuilt = TrustStore(store.ders, store.name)
    assert rebuilt.key == store.key and len(rebuilt) == 2
    assert all(cert in rebuilt for cert in store.certificates)


@pytest.mark.parametrize("content", [b"", b"hello, not a certificate\n", b"\x30\x03\x02\x01\x01"])
def test_file_without_certificate_is_an_error(tmp_path, content):
    bad = tmp_path / "anchors.pem"
    bad.write_bytes(content)
    with pytest.raises(TrustStoreError) as info:
        TrustStore.from_paths([bad])
    message = str(info.value)
    assert str(bad) in message and "\n" not in message


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(TrustStoreError, match="cannot read"):
        TrustStore.from_paths([tmp_path / "absent.pem"])


def test_empty_store_trusts_nothing():
    (sig,) = signatures_of(FIXTURES / "t64_sha256.exe")
    verdict = verify_signer(sig, TrustStore.empty())
    assert verdict.signature_valid and not verdict.trusted
    assert [f.code for f in verdict.findings] == [FindingCode.CHAIN_UNTRUSTED]
    assert verdict.chain_certs and verdict.chain_certs[0] is not None  # best-effort chain


def test_look_alike_anchor_is_not_trusted(tmp_path):
    """A root with the test CA's exact name but another key anchors nothing."""
    real = cx509.load_pem_x509_certificate((PKI / "ca.pem").read_bytes())
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.now(UTC)
    fake = (
        cx509.CertificateBuilder()
        .subject_name(real.subject)
        .issuer_name(real.subject)
        .public_key(key.public_key())
        .serial_number(real.serial_number)
        .not_valid_before(now - timedelta(days=3650))
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(cx509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = tmp_path / "fake.pem"
    path.write_bytes(fake.public_bytes(Encoding.PEM))
    (sig,) = signatures_of(FIXTURES / "t64_sha256.exe")
    verdict = verify_signer(sig, TrustStore.from_paths([path]))
    assert not verdict.trusted
    assert FindingCode.CHAIN_UNTRUSTED in [f.code for f in verdict.findings]


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_endless_anchor_file_is_refused_at_the_bound():
    with pytest.raises(TrustStoreError) as info:
        TrustStore.from_paths(["/dev/zero"])
    assert str(info.value) == "/dev/zero: larger than 64 MiB"


def test_directory_as_anchor_file_is_a_one_line_error(tmp_path):
    with pytest.raises(TrustStoreError) as info:
        TrustStore.from_paths([tmp_path])
    assert str(info.value) == f"{tmp_path}: cannot read (Is a directory)"


def test_pem_blocks_are_read_as_the_plain_rule_says(tmp_path):
    # Each BEGIN CERTIFICATE (X509 / TRUSTED too) up to the first END after it; a block whose
    # body is not base64 and whitespace is skipped; text between blocks is ignored.
    import re

    _kind, _headers, ca = pem.unarmor((PKI / "ca.pem").read_bytes())
    _kind, _headers, tsa = pem.unarmor((PKI / "tsaca.pem").read_bytes())
    ca_block = pem.armor("CERTIFICATE", ca)
    tsa_block = pem.armor("TRUSTED CERTIFICATE", tsa)
    bundle = (
        b"# a comment\n"
        + ca_block
        + b"-----BEGIN CERTIFICATE-----\nProc-Type: 4,ENCRYPTED\nAAAA\n-----END CERTIFICATE-----\n"
        + b"garbage between blocks\n"
        + tsa_block
        + b"-----BEGIN CERTIFICATE-----\nQUFB"  # never ended
    )
    path = tmp_path / "bundle.pem"
    path.write_bytes(bundle)
    store = TrustStore.from_paths([path])
    assert sorted(store.ders) == sorted([ca, tsa])
    # The same blocks as one non-greedy regular expression finds (the rule written once more).
    oracle = re.compile(
        rb"-----BEGIN (?:X509 |TRUSTED )?CERTIFICATE-----([A-Za-z0-9+/=\s]+?)-----END"
    )
    import binascii

    assert sorted(binascii.a2b_base64(m.group(1)) for m in oracle.finditer(bundle)) == sorted(
        store.ders
    )
