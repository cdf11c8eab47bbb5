"""Parse Windows catalog files (.cat): PKCS#7 SignedData over a certificate trust list (CTL).

A catalog is ``ContentInfo{signedData}`` whose eContentType is szOID_CTL and whose content is a
``CertificateTrustList`` (MS-CAESO). Every trusted subject ("member") carries SPC_INDIRECT_DATA
with the file's hash (the Authenticode hash for PE files, a flat hash otherwise), optional page
hashes, and name/value attributes. Members are matched on that digest, never on the subject tag:
tags are UTF-16 hex text in v1 catalogs and raw digests in v2 ones, and need not equal the hash.

The parser is pure and walks the DER itself (see :mod:`.der`); every problem is a
:class:`MalformedCatalog`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..authenticode import oids
from ..authenticode.signeddata import ASN1_ERRORS
from ..errors import MalformedCatalog
from ..limits import DEFAULT_LIMITS, Limits
from ..reader import Reader
from . import der
from .der import Tlv

# Catalog-specific OIDs (wincrypt.h names); the Authenticode ones live in authenticode.oids.
OID_SIGNED_DATA = oids.SIGNED_DATA
OID_CTL = oids.CTL  # szOID_CTL
OID_SPC_INDIRECT_DATA = oids.SPC_INDIRECT_DATA
OID_SPC_PE_IMAGE_DATA = oids.SPC_PE_IMAGE_DATA
OID_CATALOG_LIST = "1.3.6.1.4.1.311.12.1.1"  # szOID_CATALOG_LIST (subject usage)
OID_CATALOG_LIST_MEMBER = "1.3.6.1.4.1.311.12.1.2"  # v1 catalogs, SHA-1 members
OID_CATALOG_LIST_MEMBER2 = "1.3.6.1.4.1.311.12.1.3"  # v2 catalogs, SHA-256 members
OID_CAT_NAMEVALUE = "1.3.6.1.4.1.311.12.2.1"
OID_CAT_MEMBERINFO = "1.3.6.1.4.1.311.12.2.2"
OID_CAT_MEMBERINFO2 = "1.3.6.1.4.1.311.12.2.3"

CATALOG_VERSIONS = {OID_CATALOG_LIST_MEMBER: 1, OID_CATALOG_LIST_MEMBER2: 2}
_TIME_TAGS = (der.UTC_TIME, der.GENERALIZED_TIME)


@dataclass(frozen=True, slots=True)
class CatalogMember:
    """One trusted subject of a catalog.

    ``digest`` is the SPC_INDIRECT_DATA digest, the value files are matched on. A member
    without indirect data (Microsoft v2 catalogs list bare SHA-1 tags too) has an empty
    ``digest_algorithm`` and ``digest`` and can never match a file.
    """

    tag: bytes
    digest_algorithm: str  # hashlib name, or the dotted OID when it is not one we know
    digest: bytes
    page_hash_raw: bytes | None  # the raw {u32 offset, digest} table, checked by the engine
    page_hash_algorithm: str | None
    name: str | None  # CAT_NAMEVALUE "File", when present
    attributes: dict[str, str] = field(default_factory=dict)
    indirect_data_type: str | None = None  # SpcAttributeTypeAndOptionalValue.type

    @property
    def tag_text(self) -> str:
        """The tag as people read it: v1 tags are UTF-16LE hex text, v2 tags raw bytes."""
        return tag_text(self.tag)


@dataclass(frozen=True, slots=True)
class Catalog:
    """A parsed catalog. ``signed_data`` is the asn1crypto ``cms.SignedData`` (opaque here)."""

    members: tuple[CatalogMember, ...]
    signed_data: Any
    version: int  # 1: szOID_CATALOG_LIST_MEMBER (SHA-1), 2: ..._MEMBER2 (SHA-256)
    list_identifier: bytes
    this_update: datetime | None
    attributes: dict[str, str] = field(default_factory=dict)
    signer_count: int = 0  # SignerInfos; 0 = an unsigned catalog, which vouches for nothing

    @property
    def signed(self) -> bool:
        return self.signer_count > 0


@dataclass(frozen=True, slots=True)
class Envelope:
    """The PKCS#7 layer of a catalog: where the CTL is and how many signers there are."""

    reader: Reader
    ctl: Tlv
    signer_count: int


def tag_text(tag: bytes) -> str:
    """v1 tags are the UTF-16LE text of the hex digest; v2 tags are raw bytes (shown as hex)."""
    if len(tag) % 2 == 0 and tag:
        try:
            text = tag.decode("utf-16-le").rstrip("\x00")  # makecat writes the NUL too
        except UnicodeDecodeError:
            text = ""
        if text and all(c in "0123456789abcdefABCDEF" for c in text):
            return text.upper()
    return tag.hex().upper()


def parse_envelope(
    data: bytes | bytearray | memoryview, limits: Limits = DEFAULT_LIMITS
) -> Envelope:
    """Check the ContentInfo/SignedData layers and locate the CTL, without reading members."""
    if len(data) > limits.max_catalog_size:
        raise MalformedCatalog(
            None, "catalog", f"{len(data)} bytes exceeds the limit of {limits.max_catalog_size}"
        )
    r = der.reader(data)
    top = der.expect(r, 0, len(r), der.SEQUENCE, "ContentInfo")
    if top.end != len(r):
        raise r.fail(top.end, "ContentInfo", f"{len(r) - top.end} bytes after the catalog")
    items = der.children(r, top, "ContentInfo")
    if len(items) != 2 or der.oid(r, items[0], "ContentInfo.contentType") != OID_SIGNED_DATA:
        raise r.fail(top.start, "ContentInfo", "not a PKCS#7 signedData")
    if items[1].tag != der.CONTEXT_0:
        raise r.fail(items[1].start, "ContentInfo.content", "expected [0] EXPLICIT")
    signed = der.only_child(r, items[1], "SignedData")
    if signed.tag != der.SEQUENCE:
        raise r.fail(signed.start, "SignedData", "expected a SEQUENCE")
    parts = der.children(r, signed, "SignedData")
    if len(parts) < 4:
        raise r.fail(signed.start, "SignedData", f"{len(parts)} fields, at least 4 expected")
    der.integer(r, parts[0], "SignedData.version")
    if parts[1].tag != der.SET:
        raise r.fail(parts[1].start, "SignedData.digestAlgorithms", "expected a SET")
    encap = parts[2]
    if encap.tag != der.SEQUENCE:
        raise r.fail(encap.start, "SignedData.contentInfo", "expected a SEQUENCE")
    signer_infos = parts[-1]
    if signer_infos.tag != der.SET:
        raise r.fail(signer_infos.start, "SignedData.signerInfos", "expected a SET")
    for extra in parts[3:-1]:
        if extra.tag not in (der.CONTEXT_0, der.CONTEXT_1):  # certificates, crls
            raise r.fail(extra.start, "SignedData", f"unexpected field tag {extra.tag:#04x}")
    signer_count = len(der.children(r, signer_infos, "SignedData.signerInfos"))
    inner = der.children(r, encap, "SignedData.contentInfo")
    if not inner or der.oid(r, inner[0], "eContentType") != OID_CTL:
        raise r.fail(encap.start, "eContentType", "content type is not szOID_CTL")
    if len(inner) != 2 or inner[1].tag != der.CONTEXT_0:
        raise r.fail(encap.start, "eContent", "the certificate trust list is missing")
    ctl = der.only_child(r, inner[1], "eContent")
    if ctl.tag == der.OCTET_STRING:  # CMS-style encoders wrap the CTL in an OCTET STRING
        wrapper = ctl
        ctl = der.read_tlv(r, wrapper.body, wrapper.end, "CertificateTrustList")
        if ctl.end != wrapper.end:
            raise r.fail(ctl.end, "eContent", "bytes after the certificate trust list")
    if ctl.tag != der.SEQUENCE:
        raise r.fail(ctl.start, "CertificateTrustList", "expected a SEQUENCE")
    return Envelope(r, ctl, signer_count)


def load_signed_data(data: bytes | bytearray | memoryview) -> Any:
    """The catalog's SignedData as an asn1crypto object, for signature verification."""
    from asn1crypto import cms

    try:
        info = cms.ContentInfo.load(bytes(data))
        signed = info["content"]
        if not isinstance(signed, cms.SignedData):
            raise ValueError(f"content is {type(signed).__name__}, not SignedData")
        # asn1crypto parses lazily: touch what the verifier reads first so errors surface here.
        signed["encap_content_info"]["content_type"].dotted  # noqa: B018
        len(signed["signer_infos"])
    except ASN1_ERRORS as exc:
        reason = " ".join(str(exc).split())
        raise MalformedCatalog(0, "ContentInfo", f"asn1crypto cannot load it: {reason}") from None
    return signed


def parse_catalog(
    data: bytes | bytearray | memoryview,
    limits: Limits = DEFAULT_LIMITS,
    *,
    load_signature: bool = True,
) -> Catalog:
    """Parse a whole catalog (envelope, CTL header, every member). Raises MalformedCatalog.

    ``load_signature=False`` leaves ``signed_data`` None: the index only needs the members,
    and asn1crypto need not be imported for that."""
    env = parse_envelope(data, limits)
    r = env.reader
    fields = der.children(r, env.ctl, "CertificateTrustList")
    pos = 0

    def take(tags: tuple[int, ...]) -> Tlv | None:
        nonlocal pos
        if pos < len(fields) and fields[pos].tag in tags:
            pos += 1
            return fields[pos - 1]
        return None

    take((der.INTEGER,))  # CTL version, DEFAULT v1; the catalog version comes from below
    if take((der.SEQUENCE,)) is None:
        raise r.fail(env.ctl.start, "CTL.subjectUsage", "missing")
    list_id = take((der.OCTET_STRING,))
    take((der.INTEGER,))  # sequenceNumber
    this_update_tlv = take(_TIME_TAGS)
    take(_TIME_TAGS)  # nextUpdate
    algorithm = take((der.SEQUENCE,))
    if algorithm is None:
        raise r.fail(env.ctl.start, "CTL.subjectAlgorithm", "missing")
    algorithm_parts = der.children(r, algorithm, "CTL.subjectAlgorithm")
    if not algorithm_parts:
        raise r.fail(algorithm.start, "CTL.subjectAlgorithm", "empty AlgorithmIdentifier")
    algorithm_oid = der.oid(r, algorithm_parts[0], "CTL.subjectAlgorithm")
    version = CATALOG_VERSIONS.get(algorithm_oid)
    if version is None:
        raise r.fail(algorithm.start, "CTL.subjectAlgorithm", f"not a catalog: {algorithm_oid}")
    subjects = take((der.SEQUENCE,))
    extensions = take((der.CONTEXT_0,))
    if pos != len(fields):
        raise r.fail(fields[pos].start, "CertificateTrustList", "unexpected trailing field")

    members: list[CatalogMember] = []
    if subjects is not None:
        items = der.children(r, subjects, "CTL.trustedSubjects")
        if len(items) > limits.max_catalog_members:
            raise r.fail(
                subjects.start,
                "CTL.trustedSubjects",
                f"{len(items)} members exceeds the limit of {limits.max_catalog_members}",
            )
        members = [_parse_member(r, item, limits) for item in items]
    return Catalog(
        members=tuple(members),
        signed_data=load_signed_data(data) if load_signature else None,
        version=version,
        list_identifier=der.contents(r, list_id, "CTL.listIdentifier") if list_id else b"",
        this_update=der.time(r, this_update_tlv, "CTL.thisUpdate") if this_update_tlv else None,
        attributes=_parse_extensions(r, extensions) if extensions else {},
        signer_count=env.signer_count,
    )


def _parse_member(r: Reader, item: Tlv, limits: Limits) -> CatalogMember:
    if item.tag != der.SEQUENCE:
        raise r.fail(item.start, "TrustedSubject", "expected a SEQUENCE")
    parts = der.children(r, item, "TrustedSubject")
    if not parts or parts[0].tag != der.OCTET_STRING or len(parts) > 2:
        raise r.fail(item.start, "TrustedSubject", "expected {identifier, attributes}")
    tag = der.contents(r, parts[0], "TrustedSubject.subjectIdentifier")
    attributes: dict[str, str] = {}
    indirect: tuple[str | None, str, bytes, bytes | None, str | None] | None = None
    if len(parts) == 2:
        if parts[1].tag != der.SET:
            raise r.fail(parts[1].start, "TrustedSubject.attributes", "expected a SET")
        for attribute in der.children(r, parts[1], "TrustedSubject.attributes"):
            attr_oid, values = _attribute(r, attribute)
            if attr_oid == OID_SPC_INDIRECT_DATA:
                if indirect is not None:
                    raise r.fail(attribute.start, "SPC_INDIRECT_DATA", "appears twice")
                value = der.only_child(r, values, "SPC_INDIRECT_DATA")
                indirect = _parse_indirect_data(r, value, limits)
            elif attr_oid == OID_CAT_NAMEVALUE:
                for value in der.children(r, values, "CAT_NAMEVALUE"):
                    key, text = _name_value(r, value)
                    attributes[key] = text
            elif attr_oid == OID_CAT_MEMBERINFO:
                for value in der.children(r, values, "CAT_MEMBERINFO"):
                    info = der.children(r, value, "CAT_MEMBERINFO")
                    if len(info) != 2:
                        raise r.fail(value.start, "CAT_MEMBERINFO", "expected {guid, version}")
                    guid = der.bmp_string(r, info[0], "CAT_MEMBERINFO.subjectGuid")
                    attributes["MemberInfo.SubjectGuid"] = guid
                    cert_version = der.integer(r, info[1], "CAT_MEMBERINFO.certVersion")
                    attributes["MemberInfo.CertVersion"] = str(cert_version)
            else:
                # MEMBERINFO2 and unknown attributes: kept verbatim (meaning undocumented).
                key = "MemberInfo2" if attr_oid == OID_CAT_MEMBERINFO2 else attr_oid
                attributes[key] = der.contents(r, values, key).hex()
    name = next((v for k, v in attributes.items() if k.lower() == "file"), None)
    if indirect is None:
        return CatalogMember(tag, "", b"", None, None, name, attributes)
    data_type, algorithm, digest, page_raw, page_algorithm = indirect
    return CatalogMember(
        tag, algorithm, digest, page_raw, page_algorithm, name, attributes, data_type
    )


def _attribute(r: Reader, attribute: Tlv) -> tuple[str, Tlv]:
    if attribute.tag != der.SEQUENCE:
        raise r.fail(attribute.start, "Attribute", "expected a SEQUENCE")
    parts = der.children(r, attribute, "Attribute")
    if len(parts) != 2 or parts[1].tag != der.SET:
        raise r.fail(attribute.start, "Attribute", "expected {type, SET OF values}")
    return der.oid(r, parts[0], "Attribute.type"), parts[1]


def _name_value(r: Reader, value: Tlv) -> tuple[str, str]:
    """CAT_NAMEVALUE ::= SEQUENCE { tag BMPString, flags INTEGER, value OCTET STRING (UTF-16LE) }"""
    if value.tag != der.SEQUENCE:
        raise r.fail(value.start, "CAT_NAMEVALUE", "expected a SEQUENCE")
    parts = der.children(r, value, "CAT_NAMEVALUE")
    if len(parts) != 3 or parts[2].tag != der.OCTET_STRING:
        raise r.fail(value.start, "CAT_NAMEVALUE", "expected {tag, flags, value}")
    key = der.bmp_string(r, parts[0], "CAT_NAMEVALUE.tag")
    der.integer(r, parts[1], "CAT_NAMEVALUE.flags")
    raw = der.contents(r, parts[2], "CAT_NAMEVALUE.value")
    return key, raw.decode("utf-16-le", errors="replace").rstrip("\x00")


def _parse_indirect_data(
    r: Reader, value: Tlv, limits: Limits
) -> tuple[str | None, str, bytes, bytes | None, str | None]:
    """SpcIndirectDataContent ::= SEQUENCE { data SpcAttributeTypeAndOptionalValue,
    messageDigest DigestInfo }; returns (type, algorithm, digest, page table, page algorithm)."""
    if value.tag != der.SEQUENCE:
        raise r.fail(value.start, "SpcIndirectDataContent", "expected a SEQUENCE")
    parts = der.children(r, value, "SpcIndirectDataContent")
    if len(parts) != 2 or parts[0].tag != der.SEQUENCE or parts[1].tag != der.SEQUENCE:
        raise r.fail(value.start, "SpcIndirectDataContent", "expected {data, messageDigest}")
    data = der.children(r, parts[0], "SpcIndirectDataContent.data")
    if not data or len(data) > 2:
        raise r.fail(parts[0].start, "SpcIndirectDataContent.data", "expected {type, value}")
    data_type = der.oid(r, data[0], "SpcIndirectDataContent.data.type")
    digest_info = der.children(r, parts[1], "DigestInfo")
    if len(digest_info) != 2 or digest_info[1].tag != der.OCTET_STRING:
        raise r.fail(parts[1].start, "DigestInfo", "expected {algorithm, digest}")
    if digest_info[0].tag != der.SEQUENCE:
        raise r.fail(digest_info[0].start, "DigestInfo.digestAlgorithm", "expected a SEQUENCE")
    alg_parts = der.children(r, digest_info[0], "DigestInfo.digestAlgorithm")
    if not alg_parts:
        raise r.fail(digest_info[0].start, "DigestInfo.digestAlgorithm", "empty")
    alg_oid = der.oid(r, alg_parts[0], "DigestInfo.digestAlgorithm")
    algorithm = oids.DIGEST_OIDS.get(alg_oid, alg_oid)
    digest = der.contents(r, digest_info[1], "DigestInfo.digest")
    expected = oids.DIGEST_SIZES.get(algorithm)
    if expected is not None and len(digest) != expected:
        raise r.fail(
            digest_info[1].start, "DigestInfo.digest", f"{len(digest)} bytes for {algorithm}"
        )
    page_raw: bytes | None = None
    page_algorithm: str | None = None
    if data_type == OID_SPC_PE_IMAGE_DATA and len(data) == 2:
        found = _page_hashes(r, data[1], limits)
        if found is not None:
            page_raw, page_algorithm = found
    return data_type, algorithm, digest, page_raw, page_algorithm


def _page_hashes(r: Reader, pe_data: Tlv, limits: Limits) -> tuple[bytes, str] | None:
    """SpcPeImageData.file = [1] moniker SpcSerializedObject{classId, serializedData} with
    serializedData = SET { SEQUENCE { V1/V2 OID, SET { OCTET STRING table } } ... }."""
    if pe_data.tag != der.SEQUENCE:
        raise r.fail(pe_data.start, "SpcPeImageData", "expected a SEQUENCE")
    link = next(
        (t for t in der.children(r, pe_data, "SpcPeImageData") if t.tag == der.CONTEXT_0), None
    )
    if link is None:
        return None
    moniker = der.only_child(r, link, "SpcPeImageData.file")
    if moniker.tag != der.CONTEXT_1:  # url or file link (e.g. "<<<Obsolete>>>"): no page hashes
        return None
    obj = der.children(r, moniker, "SpcSerializedObject")
    if len(obj) != 2 or obj[0].tag != der.OCTET_STRING or obj[1].tag != der.OCTET_STRING:
        raise r.fail(moniker.start, "SpcSerializedObject", "expected {classId, serializedData}")
    if der.contents(r, obj[0], "SpcSerializedObject.classId") != oids.PAGE_HASH_CLASS_ID:
        return None
    serialized = der.expect(r, obj[1].body, obj[1].end, der.SET, "page hashes")
    tables: dict[str, bytes] = {}
    for entry in der.children(r, serialized, "page hashes"):
        parts = der.children(r, entry, "page hashes")
        if len(parts) != 2 or parts[1].tag != der.SET:
            raise r.fail(entry.start, "page hashes", "expected {OID, SET { table }}")
        algorithm = oids.PAGE_HASH_ALGORITHMS.get(der.oid(r, parts[0], "page hashes.type"))
        table = der.only_child(r, parts[1], "page hashes.table")
        if table.tag != der.OCTET_STRING:
            raise r.fail(table.start, "page hashes.table", "expected an OCTET STRING")
        if table.length > limits.max_page_hash_entries * (4 + 64):
            raise r.fail(table.start, "page hashes.table", "table exceeds the entry limit")
        if algorithm is not None:
            tables[algorithm] = der.contents(r, table, "page hashes.table")
    for algorithm in ("sha256", "sha1"):  # V2 preferred when both are present (as IPRT does)
        if algorithm in tables:
            return tables[algorithm], algorithm
    return None


def _parse_extensions(r: Reader, extensions: Tlv) -> dict[str, str]:
    """ctlExtensions [0] EXPLICIT: catalog-level CAT_NAMEVALUE items (OSAttr, HWID...)."""
    out: dict[str, str] = {}
    seq = der.only_child(r, extensions, "CTL.extensions")
    for ext in der.children(r, seq, "CTL.extensions"):
        parts = der.children(r, ext, "Extension")
        if len(parts) not in (2, 3) or parts[-1].tag != der.OCTET_STRING:
            raise r.fail(ext.start, "Extension", "expected {OID, critical?, value}")
        ext_oid = der.oid(r, parts[0], "Extension.extnID")
        value = parts[-1]
        if ext_oid == OID_CAT_NAMEVALUE:
            inner = der.read_tlv(r, value.body, value.end, "CAT_NAMEVALUE")
            key, text = _name_value(r, inner)
            out[key] = text
        else:
            out[ext_oid] = der.contents(r, value, "Extension.extnValue").hex()
    return out
