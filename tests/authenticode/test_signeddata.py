"""parse_signatures on real signed files and on structures edited to break one rule each."""

from __future__ import annotations

import pytest
from asn1crypto import algos, cms, core

from codeintegrity.authenticode import oids
from codeintegrity.authenticode.signeddata import parse_signatures
from codeintegrity.errors import MalformedSignature
from codeintegrity.findings import FindingCode
from codeintegrity.limits import Limits

from .conftest import DATA, FIXTURES, cert_entries, signatures_of


def _der(name: str) -> bytes:
    return cert_entries((FIXTURES / name).read_bytes())[0]


def _tlv(tag: int, value: bytes) -> bytes:
    n = len(value)
    length = bytes([n]) if n < 0x80 else bytes([0x82, n >> 8, n & 0xFF])
    return bytes([tag]) + length + value


def _codes(sig) -> list[FindingCode]:
    return [f.code for f in sig.findings]


def test_nested_fixture_yields_primary_and_nested():
    sigs = signatures_of(FIXTURES / "t64_nested_sha1+sha256ph.exe")
    assert [(s.index, s.parent, s.depth) for s in sigs] == [(0, None, 0), (1, 0, 1)]
    primary, nested = sigs
    assert primary.digest_algorithm == "sha1" and len(primary.signed_digest) == 20
    assert primary.page_hash_raw is None and primary.page_hash_algorithm is None
    assert nested.digest_algorithm == "sha256" and len(nested.signed_digest) == 32
    assert nested.page_hash_algorithm == "sha256"
    table = nested.page_hash_raw
    assert table is not None and len(table) % 36 == 0
    # First entry covers the headers at offset 0; the terminator digest is all zeros.
    assert table[:4] == b"\0\0\0\0" and table[-32:] == bytes(32)
    assert primary.findings == () and nested.findings == ()


def test_sha1_page_hash_table():
    (sig,) = signatures_of(FIXTURES / "t64_sha1_ph.exe")
    assert sig.page_hash_algorithm == "sha1"
    assert sig.page_hash_raw is not None and len(sig.page_hash_raw) % 24 == 0
    assert sig.indirect_data_type == oids.SPC_PE_IMAGE_DATA


def test_first_index_and_entry_are_used():
    sigs = parse_signatures(_der("t64_nested_sha1+sha256ph.exe"), 3, first_index=7)
    assert [(s.index, s.parent, s.entry) for s in sigs] == [(7, None, 3), (8, 7, 3)]


def test_two_entries_of_shim_are_two_primaries():
    path = DATA / "samples/signed/deb__shim-signed_1.51~1+deb12u1+16.1-2~deb12u1_amd64"
    sigs = signatures_of(path / "shimx64.efi.signed")
    assert [(s.index, s.parent, s.entry) for s in sigs] == [(0, None, 0), (1, None, 1)]


def test_fwupd_indirect_data_type_is_a_warning():
    path = DATA / "samples/signed/deb__fwupd-amd64-signed_1%3a1.4+1_amd64/fwupdx64.efi.signed"
    (sig,) = signatures_of(path)
    assert sig.indirect_data_type == "1.3.6.1.4.1.311.2.1.21"
    assert _codes(sig) == [FindingCode.INDIRECT_DATA_TYPE]
    assert sig.findings[0].signature == 0
    assert sig.digest_algorithm == "sha256" and len(sig.signed_digest) == 32


def test_truncated_certificate_is_malformed():
    data = (FIXTURES / "bad_truncate_cert.exe").read_bytes()
    with pytest.raises(MalformedSignature) as info:
        parse_signatures(cert_entries(data)[0], 0)
    assert "\n" not in str(info.value) and info.value.field == "ContentInfo"


@pytest.mark.parametrize("der", [b"", b"\x00\x01garbage", b"\x30\x03\x02\x01\x01"])
def test_not_der_is_malformed(der):
    with pytest.raises(MalformedSignature):
        parse_signatures(der, 0)


def test_not_signed_data_is_malformed():
    der = cms.ContentInfo({"content_type": "data", "content": b"hello"}).dump()
    with pytest.raises(MalformedSignature, match="not signedData"):
        parse_signatures(der, 0)


def _edited(name: str, edit) -> bytes:
    info = cms.ContentInfo.load(_der(name))
    edit(info["content"])
    return info.dump(force=True)


def test_wrong_econtent_type_is_malformed():
    def edit(sd):
        sd["encap_content_info"]["content_type"] = "1.2.3.4"

    with pytest.raises(MalformedSignature, match="not SpcIndirectData"):
        parse_signatures(_edited("t64_sha256.exe", edit), 0)


def test_signer_digest_algorithm_mismatch():
    def edit(sd):
        sd["signer_infos"][0]["digest_algorithm"] = algos.DigestAlgorithm({"algorithm": "sha1"})

    (sig,) = parse_signatures(_edited("t64_sha256.exe", edit), 0)
    assert FindingCode.DIGEST_ALGORITHM_MISMATCH in _codes(sig)


def test_two_outer_digest_algorithms():
    def edit(sd):
        sd["digest_algorithms"] = [{"algorithm": "sha256"}, {"algorithm": "sha1"}]

    (sig,) = parse_signatures(_edited("t64_sha256.exe", edit), 0)
    assert _codes(sig).count(FindingCode.DIGEST_ALGORITHM_MISMATCH) == 2


def test_signer_count():
    def edit(sd):
        signer = sd["signer_infos"][0]
        sd["signer_infos"] = cms.SignerInfos([signer, cms.SignerInfo.load(signer.dump())])

    (sig,) = parse_signatures(_edited("t64_sha256.exe", edit), 0)
    assert _codes(sig) == [FindingCode.SIGNER_COUNT]


def test_bad_nested_signature_becomes_finding_on_parent():
    bogus = cms.ContentInfo({"content_type": "data", "content": b"not a signature"})

    def edit(sd):
        attr = cms.CMSAttribute({"type": oids.NESTED_SIGNATURE, "values": [bogus]})
        sd["signer_infos"][0]["unsigned_attrs"] = cms.CMSAttributes([attr])

    sigs = parse_signatures(_edited("t64_nested_sha1+sha256ph.exe", edit), 0)
    assert len(sigs) == 1
    assert _codes(sigs[0]) == [FindingCode.NESTED_SIGNATURE_MALFORMED]
    assert sigs[0].findings[0].signature == 0


def test_nested_garbage_bytes_do_not_hide_siblings():
    good = core.Any.load(_der("t64_sha256.exe"))
    garbage = core.Any.load(b"\x30\x03\x02\x01\x01")
    # asn1crypto types the nested-signature values; use a same-length stand-in OID, then swap.
    stand_in = "1.3.6.1.4.1.311.2.4.9"

    def edit(sd):
        attr = cms.CMSAttribute({"type": stand_in, "values": [garbage, good]})
        sd["signer_infos"][0]["unsigned_attrs"] = cms.CMSAttributes([attr])

    der = _edited("t64_sha256.exe", edit)
    stand_in_der = core.ObjectIdentifier(stand_in).dump()
    assert der.count(stand_in_der) == 1
    der = der.replace(stand_in_der, core.ObjectIdentifier(oids.NESTED_SIGNATURE).dump())
    sigs = parse_signatures(der, 0)
    assert [(s.index, s.parent) for s in sigs] == [(0, None), (1, 0)]
    assert _codes(sigs[0]) == [FindingCode.NESTED_SIGNATURE_MALFORMED]
    assert sigs[1].findings == ()


def test_nesting_and_count_limits():
    der = _der("t64_nested_sha1+sha256ph.exe")
    (only,) = parse_signatures(der, 0, Limits(max_nesting_depth=0))
    assert _codes(only) == [FindingCode.NESTED_SIGNATURE_MALFORMED]
    assert "nesting deeper" in only.findings[0].detail
    (only,) = parse_signatures(der, 0, Limits(max_signatures=1))
    assert "more than 1 signatures" in only.findings[0].detail


def test_unknown_digest_algorithm():
    def edit(sd):
        from codeintegrity.authenticode.asn1 import SpcIndirectDataContent
        from codeintegrity.authenticode.signeddata import econtent_tlv

        indirect = SpcIndirectDataContent.load(econtent_tlv(sd["encap_content_info"]["content"]))
        indirect["message_digest"]["digest_algorithm"] = {"algorithm": "sha224"}
        inner = indirect.dump(force=True)
        body = core.ObjectIdentifier(oids.SPC_INDIRECT_DATA).dump() + _tlv(0xA0, inner)
        sd["encap_content_info"] = cms.ContentInfo.load(_tlv(0x30, body))

    (sig,) = parse_signatures(_edited("t64_sha256.exe", edit), 0)
    assert FindingCode.UNSUPPORTED_ALGORITHM in _codes(sig)
