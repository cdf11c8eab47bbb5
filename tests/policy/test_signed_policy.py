"""Signed policies: the PKCS#7 made by `openssl cms -sign` verifies; a tampered copy does not;
the signer is matched against the policy's UpdatePolicySigners."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from codeintegrity.authenticode.certinfo import tbs_hash
from codeintegrity.authenticode.trust import TrustStore
from codeintegrity.policy.signed_policy import check_policy_signature

from ..conftest import DATA, PKI
from ..image.imagedata import sign_pkcs7
from ..image.sipolicy_compile import compile_policy

POLICY_XML = DATA / "image" / "image-policy.xml"
NAME = "Contoso image policy".encode("utf-16-le")

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")


def sign(payload: bytes, tmp_path: Path, content_type: str = "1.3.6.1.4.1.311.79.1") -> bytes:
    """PKCS#7 SignedData over the compiled policy, made by openssl with the test PKI's leaf."""
    bare, out = tmp_path / "policy.bin", tmp_path / "policy.p7b"
    bare.write_bytes(payload)
    sign_pkcs7(bare, out, content_type)
    return out.read_bytes()


@pytest.fixture(scope="module")
def anchors():
    return TrustStore.from_paths([str(PKI / "ca.pem")])


@pytest.fixture
def signed(tmp_path):
    return sign(compile_policy(POLICY_XML.read_text(encoding="utf-8")), tmp_path)


def test_an_openssl_signed_policy_verifies(signed, anchors):
    result = check_policy_signature(signed, anchors)
    assert (result.status, result.trusted, result.refused) == ("valid", True, False)
    assert result.signer is not None and "Throwaway Test Publisher" in result.signer
    assert result.update_signer is None  # the policy names no UpdatePolicySigners
    # Without the test root it still verifies, but is not trusted (and says why).
    untrusted = check_policy_signature(signed, TrustStore.empty())
    assert (untrusted.status, untrusted.trusted) == ("valid", False)
    assert untrusted.problems and not untrusted.refused


def test_a_tampered_policy_does_not_verify(signed, anchors):
    assert signed.count(NAME) == 1
    renamed = signed.replace(NAME, "Kontoso image policy".encode("utf-16-le"))
    result = check_policy_signature(renamed, anchors)
    assert result.status == "invalid" and result.refused
    assert any(p.startswith("messageDigest") for p in result.problems), result.problems
    # The signature value changed instead: the digest still matches, the signature does not.
    broken = bytearray(signed)
    broken[-5] ^= 0x01
    result = check_policy_signature(bytes(broken), anchors)
    assert result.refused and "sha256 signature does not verify" in result.problems


def test_bare_and_broken_containers(signed, anchors):
    bare = compile_policy(POLICY_XML.read_text(encoding="utf-8"))
    assert check_policy_signature(bare, anchors).status == "unsigned"
    truncated = check_policy_signature(signed[:2000], anchors)
    assert truncated.refused and truncated.problems[0].startswith("PKCS#7 does not parse")


def test_a_signature_over_another_content_type_is_refused(tmp_path, anchors):
    payload = compile_policy(POLICY_XML.read_text(encoding="utf-8"))
    other = sign(payload, tmp_path, content_type="1.2.840.113549.1.7.1")  # id-data
    result = check_policy_signature(other, anchors)
    assert result.refused
    assert any("eContentType 1.2.840.113549.1.7.1" in p for p in result.problems)


def _with_update_signer(root_tbs: str) -> str:
    xml = POLICY_XML.read_text(encoding="utf-8")
    signer = (
        '    <Signer ID="ID_SIGNER_UPDATE" Name="policy signer">\n'
        f'      <CertRoot Type="TBS" Value="{root_tbs.upper()}" />\n'
        "    </Signer>\n  </Signers>"
    )
    return xml.replace("  </Signers>", signer, 1).replace(
        "<UpdatePolicySigners />",
        '<UpdatePolicySigners><UpdatePolicySigner SignerId="ID_SIGNER_UPDATE" />'
        "</UpdatePolicySigners>",
    )


def test_the_signer_is_matched_against_update_policy_signers(tmp_path, anchors):
    from asn1crypto import pem, x509

    _type, _headers, der = pem.unarmor((PKI / "ca.pem").read_bytes())
    ca_tbs = tbs_hash(x509.Certificate.load(der))
    ours = sign(compile_policy(_with_update_signer(ca_tbs)), tmp_path)
    assert check_policy_signature(ours, anchors).update_signer is True
    theirs = sign(compile_policy(_with_update_signer("ab" * 32)), tmp_path)
    result = check_policy_signature(theirs, anchors)
    assert result.status == "valid" and result.update_signer is False


def test_hostile_pkcs7_is_a_verdict_never_an_exception(signed, anchors):
    # Cut at every 97th byte and with single bytes flipped across the structure: each is
    # "invalid" (or, for a flip in an unsigned field, still "valid"), never a traceback.
    statuses = set()
    for end in range(1, len(signed), 97):
        result = check_policy_signature(signed[:end], anchors)
        assert result.status == "invalid" and result.problems
    for position in range(0, len(signed), 89):
        flipped = bytearray(signed)
        flipped[position] ^= 0x5A
        statuses.add(check_policy_signature(bytes(flipped), anchors).status)
    assert "invalid" in statuses
