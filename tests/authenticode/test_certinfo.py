"""cert_info cross-checked against the cryptography package's view of the same certificates."""

from __future__ import annotations

import hashlib

import pytest
from asn1crypto import pem, x509
from cryptography import x509 as cx509
from cryptography.hazmat.primitives import hashes

from codeintegrity.authenticode.certinfo import cert_info, rfc4514

from .conftest import DATA, PKI, SIGNIFY, signatures_of

PEMS = [PKI / "ca.pem", PKI / "leaf.pem", PKI / "tsa.pem", *sorted((DATA / "trust").glob("*.pem"))]


def _pem_certs(path):
    for _kind, _headers, der in pem.unarmor(path.read_bytes(), multiple=True):
        yield der


@pytest.mark.parametrize("path", PEMS, ids=lambda p: p.name)
def test_matches_cryptography(path):
    for der in _pem_certs(path):
        info = cert_info(x509.Certificate.load(der))
        ref = cx509.load_der_x509_certificate(der)
        assert info.subject == ref.subject.rfc4514_string({cx509.NameOID.EMAIL_ADDRESS: "E"})
        assert info.issuer == ref.issuer.rfc4514_string({cx509.NameOID.EMAIL_ADDRESS: "E"})
        assert info.sha1 == ref.fingerprint(hashes.SHA1()).hex()
        assert int(info.serial, 16) == ref.serial_number
        algorithm = ref.signature_hash_algorithm
        assert algorithm is not None
        assert info.tbs_hash == hashlib.new(algorithm.name, ref.tbs_certificate_bytes).hexdigest()
        assert info.not_before == ref.not_valid_before_utc
        assert info.not_after == ref.not_valid_after_utc


def test_sha1_signed_certificate_uses_sha1_tbs_hash():
    # pciide.sys (2009) carries SHA-1-signed Microsoft certificates: WDAC uses SHA-1 TBS there.
    (sig,) = signatures_of(SIGNIFY / "pciide.sys")
    sha1_signed = [c for c in sig.certificates if c.hash_algo == "sha1"]
    assert sha1_signed
    for cert in sha1_signed:
        info = cert_info(cert)
        assert len(info.tbs_hash) == 40
        assert info.tbs_hash == hashlib.sha1(cert["tbs_certificate"].dump()).hexdigest()


def test_escaping():
    name = x509.Name.build({"common_name": "a,b+c", "organization_name": " lead#"})
    parts = {"CN=a\\,b\\+c", "O=\\ lead#"}
    assert rfc4514(name) in {",".join(parts), ",".join(reversed(list(parts)))}
