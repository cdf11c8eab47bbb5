"""parse_catalog on real catalogs (Microsoft, makecat, osslsigncode) and on built ones."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from codeintegrity.catalog import parse_catalog
from codeintegrity.catalog.ctl import parse_envelope, tag_text
from codeintegrity.errors import CIError, MalformedCatalog
from codeintegrity.limits import Limits
from tests.catalog.catbuild import Entry, build_catalog, fake_digest
from tests.catalog.peutil import authentihash
from tests.conftest import DATA, FIXTURES, SIGNIFY

MS_CAT = SIGNIFY / "115fe8649854ad531fb7ecd1318fbee6b33c9cbd78f02ed582092a96d5eb5899.cat"
UNSIGNED_CATALOGS = [
    FIXTURES / "unsigned_fixtures.cat",
    DATA / "thirdparty" / "osslsigncode" / "unsigned.cat",
    SIGNIFY / "catfiletest.cat",
]


def _load(path):
    return parse_catalog(path.read_bytes())


def test_microsoft_v2_catalog_lists_dxcore_by_its_authentihash():
    catalog = _load(MS_CAT)
    assert catalog.version == 2
    assert catalog.signed and catalog.signer_count == 1
    assert catalog.this_update == datetime(2025, 8, 9, 20, 32, 20, tzinfo=UTC)
    assert catalog.list_identifier.hex() == "7b56467aa3a44c4a9de6281d01ab6b83"
    assert catalog.attributes["PackageName"] == "Microsoft-OneCore-Graphics-Required-Package"
    assert catalog.signed_data["encap_content_info"]["content_type"].dotted == (
        "1.3.6.1.4.1.311.10.1"
    )
    dxcore = (SIGNIFY / "DXCore.dll").read_bytes()
    sha256 = authentihash(dxcore, "sha256")
    matches = [m for m in catalog.members if m.digest == sha256]
    assert len(matches) == 1
    member = matches[0]
    assert member.digest_algorithm == "sha256"
    assert member.tag == sha256  # v2: the tag is the raw digest
    assert member.indirect_data_type == "1.3.6.1.4.1.311.2.1.15"
    assert member.attributes["Hint"].endswith("\\dxcore.dll")
    # DXCore's page hashes are in its embedded signature; its catalog member carries none.
    assert member.page_hash_raw is None and member.page_hash_algorithm is None


def test_microsoft_catalog_member_with_sha256_page_hashes():
    catalog = _load(MS_CAT)
    with_pages = [m for m in catalog.members if m.page_hash_raw is not None]
    assert [m.attributes["Hint"].rsplit("\\", 1)[-1] for m in with_pages] == ["gdi32.dll"]
    raw = with_pages[0].page_hash_raw
    assert with_pages[0].page_hash_algorithm == "sha256"
    assert len(raw) % 36 == 0 and len(raw) // 36 > 2
    offsets = [int.from_bytes(raw[i : i + 4], "little") for i in range(0, len(raw), 36)]
    assert offsets[0] == 0 and offsets == sorted(offsets)
    assert raw[-32:] == bytes(32)  # the terminator entry


def test_sha1_tag_only_members_never_match():
    """Microsoft v2 catalogs also list bare SHA-1 tags without indirect data. DXCore's SHA-1
    Authentihash is one of them, but there is no SPC_INDIRECT_DATA digest to match on."""
    catalog = _load(MS_CAT)
    bare = [m for m in catalog.members if not m.digest]
    assert len(bare) == 10 and all(len(m.tag) == 20 for m in bare)
    assert all(m.digest_algorithm == "" and m.page_hash_raw is None for m in bare)
    sha1 = authentihash((SIGNIFY / "DXCore.dll").read_bytes(), "sha1")
    assert sha1 in {m.tag for m in bare}
    assert sha1 not in {m.digest for m in catalog.members}


def test_oem89_is_a_v1_catalog_with_utf16_hex_tags():
    catalog = _load(SIGNIFY / "oem89.cat")
    assert catalog.version == 1 and catalog.signed
    assert catalog.attributes["HWID1"] == "usb\\vid_0489&pid_e0d6"
    assert catalog.attributes["OS"] == "_v100_X64_21H2,_v100_X64_22H2"
    (member,) = catalog.members
    assert member.digest_algorithm == "sha1"
    assert member.digest.hex() == "b1e795b69b4c2a901a8bc8e8b36e988c6c05d836"
    assert member.tag.decode("utf-16-le") == member.digest.hex().upper() + "\0"
    assert member.tag_text == member.digest.hex().upper()
    assert member.name == "amdacpbtscoext.inf"
    assert member.attributes["MemberInfo.SubjectGuid"] == "{DE351A42-8E59-11D0-8C47-00C04FC295EE}"
    assert member.attributes["MemberInfo.CertVersion"] == "512"
    # A flat (non-PE) member: its digest is the SHA-1 of the whole .inf file.
    import hashlib

    inf = (SIGNIFY / "amdacpbtscoext.inf").read_bytes()
    assert hashlib.sha1(inf).digest() == member.digest


def test_corpus_catalog_lists_the_member_and_not_the_tampered_copy():
    catalog = _load(FIXTURES / "fixtures.cat")
    assert catalog.version == 2 and catalog.signer_count == 1
    digests = {m.digest for m in catalog.members}
    good = authentihash((FIXTURES / "cat_member_t64.exe").read_bytes(), "sha256")
    bad = authentihash((FIXTURES / "cat_member_t64_tampered.exe").read_bytes(), "sha256")
    assert good in digests and bad not in digests
    assert {m.name for m in catalog.members} == {"distlib_t64.exe", "setuptools_cli32.exe"}


@pytest.mark.parametrize("path", UNSIGNED_CATALOGS, ids=lambda p: p.name)
def test_unsigned_catalogs_parse_without_a_signer(path):
    catalog = _load(path)
    assert catalog.signer_count == 0 and not catalog.signed
    assert catalog.members


def test_osslsigncode_makecat_output_has_sha1_tag_only_members():
    catalog = _load(DATA / "thirdparty" / "osslsigncode" / "unsigned.cat")
    assert catalog.attributes == {"OSAttr": "2:6.0"}
    assert len(catalog.members) == 14
    assert sum(1 for m in catalog.members if m.digest) == 7


def test_built_catalog_round_trip_with_page_hashes():
    table = b"".join(i.to_bytes(4, "little") + fake_digest(i) for i in range(3))
    table += (0x3000).to_bytes(4, "little") + bytes(32)
    entries = [Entry(fake_digest(1), "a.dll", table), Entry(fake_digest(2))]
    catalog = parse_catalog(build_catalog(entries, attributes={"OSAttr": "2:10.0"}))
    assert catalog.attributes == {"OSAttr": "2:10.0"}
    first, second = catalog.members
    assert (first.name, first.page_hash_raw, first.page_hash_algorithm) == (
        "a.dll",
        table,
        "sha256",
    )
    assert second.digest == fake_digest(2) and second.page_hash_raw is None and second.name is None


def test_built_v1_catalog_tags_are_utf16_hex():
    digest = fake_digest(7, "sha1")
    catalog = parse_catalog(build_catalog([Entry(digest, "x.inf")], "sha1"))
    assert catalog.version == 1
    assert catalog.members[0].tag_text == digest.hex().upper()
    assert tag_text(digest) == digest.hex().upper()  # a raw tag is shown as hex too


def _tlv(tag: int, body: bytes) -> bytes:
    size = len(body)
    if size < 0x80:
        return bytes([tag, size]) + body
    raw = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(raw)]) + raw + body


def test_cms_style_octet_string_wrapped_ctl_is_accepted():
    """CMS encoders put eContent in an OCTET STRING; makecat does not. Accept both."""
    from asn1crypto import core

    data = build_catalog([Entry(fake_digest(3), "w.dll")])
    where = parse_envelope(data).ctl
    ctl = data[where.start : where.end]
    ctl_oid = core.ObjectIdentifier("1.3.6.1.4.1.311.10.1").dump()
    encap = _tlv(0x30, ctl_oid + _tlv(0xA0, _tlv(0x04, ctl)))
    signed = _tlv(0x30, b"\x02\x01\x01" + b"\x31\x00" + encap + b"\x31\x00")
    sd_oid = core.ObjectIdentifier("1.2.840.113549.1.7.2").dump()
    catalog = parse_catalog(_tlv(0x30, sd_oid + _tlv(0xA0, signed)))
    assert [m.digest for m in catalog.members] == [fake_digest(3)]
    with pytest.raises(MalformedCatalog, match="bytes after the certificate trust list"):
        encap = _tlv(0x30, ctl_oid + _tlv(0xA0, _tlv(0x04, ctl + b"\0\0")))
        signed = _tlv(0x30, b"\x02\x01\x01" + b"\x31\x00" + encap + b"\x31\x00")
        parse_catalog(_tlv(0x30, sd_oid + _tlv(0xA0, signed)))


def test_load_signature_false_skips_asn1crypto():
    catalog = parse_catalog((FIXTURES / "fixtures.cat").read_bytes(), load_signature=False)
    assert catalog.signed_data is None and len(catalog.members) == 2


# -- rejections ---------------------------------------------------------------------------


def _signature_of(pe: bytes) -> bytes:
    """The PKCS#7 of the first WIN_CERTIFICATE: SignedData, but not over a CTL."""
    import struct

    e_lfanew = struct.unpack_from("<I", pe, 0x3C)[0]
    magic = struct.unpack_from("<H", pe, e_lfanew + 24)[0]
    security_dir = e_lfanew + 24 + (96 if magic == 0x10B else 112) + 32
    offset, _ = struct.unpack_from("<II", pe, security_dir)
    length = struct.unpack_from("<I", pe, offset)[0]
    blob = pe[offset + 8 : offset + length]
    body = int.from_bytes(blob[2 : 2 + (blob[1] & 0x7F)], "big")
    return blob[: 2 + (blob[1] & 0x7F) + body]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "element expected"),
        (b"\x30\x80\x00\x00", "indefinite length"),
        (b"\x30\x09\x06\x03\x2a\x03\x04", "overruns"),
        (b"\x31\x00", "expected tag 0x30, found 0x31"),
    ],
)
def test_garbage_is_rejected(data, reason):
    with pytest.raises(MalformedCatalog, match=reason):
        parse_catalog(data)


def test_authenticode_signature_is_not_a_catalog():
    blob = _signature_of((FIXTURES / "t64_sha256.exe").read_bytes())
    with pytest.raises(MalformedCatalog, match="not szOID_CTL"):
        parse_catalog(blob)


def test_trailing_bytes_are_rejected():
    with pytest.raises(MalformedCatalog, match="after the catalog"):
        parse_catalog((FIXTURES / "fixtures.cat").read_bytes() + b"\0")


def test_limits_apply():
    data = (FIXTURES / "fixtures.cat").read_bytes()
    with pytest.raises(MalformedCatalog, match="exceeds the limit"):
        parse_envelope(data, Limits(max_catalog_size=len(data) - 1))
    with pytest.raises(MalformedCatalog, match="2 members exceeds"):
        parse_catalog(data, Limits(max_catalog_members=1))


def test_wrong_digest_size_is_rejected():
    data = build_catalog([Entry(fake_digest(1, "sha1"))], "sha256")
    # The builder writes the OID of sha256 for a 20-byte digest: the parser refuses it.
    with pytest.raises(MalformedCatalog, match="20 bytes for sha256"):
        parse_catalog(data)


def test_errors_are_one_line_cierrors():
    try:
        parse_catalog(b"\x30\x03\x02\x01")
    except CIError as exc:
        assert "\n" not in exc.diagnostics() and "offset" in exc.diagnostics()
    else:
        pytest.fail("expected MalformedCatalog")


def test_empty_subject_algorithm_is_malformed_not_an_index_error():
    # Found by test_fuzz.test_byte_flips: catfiletest.cat with byte 99 (the length of the
    # subjectAlgorithm SEQUENCE) zeroed leaves an empty AlgorithmIdentifier.
    data = bytearray((SIGNIFY / "catfiletest.cat").read_bytes())
    assert data[98:100] == b"\x30\x0e"
    data[99] = 0
    with pytest.raises(MalformedCatalog, match="CTL.subjectAlgorithm.*empty AlgorithmIdentifier"):
        parse_catalog(bytes(data))
