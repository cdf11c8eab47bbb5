"""Write catalogs with asn1crypto (an encoder independent of the project's DER walker).

Shapes follow makecat output: ContentInfo{signedData} with eContentType szOID_CTL and the CTL
directly under [0] (no OCTET STRING), one member per digest carrying CAT_NAMEVALUE "File" and
SPC_INDIRECT_DATA(SpcPeImageData), optionally with a page-hash table. Unsigned (no SignerInfo);
sign the output with osslsigncode when a signed catalog is needed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from asn1crypto import algos, core

from codeintegrity.authenticode.asn1 import (
    DigestInfo,
    PageHashAttribute,
    PageHashAttributes,
    SpcAttributeTypeAndOptionalValue,
    SpcIndirectDataContent,
    SpcLink,
    SpcPeImageData,
    SpcSerializedObject,
)

CTL = "1.3.6.1.4.1.311.10.1"
MEMBER_OIDS = {"sha1": "1.3.6.1.4.1.311.12.1.2", "sha256": "1.3.6.1.4.1.311.12.1.3"}
PAGE_HASH_OIDS = {"sha1": "1.3.6.1.4.1.311.2.3.1", "sha256": "1.3.6.1.4.1.311.2.3.2"}
PAGE_HASH_CLASS_ID = bytes.fromhex("a6b586d5b4a12466ae05a217da8e60d6")


class NameValue(core.Sequence):
    _fields = [("tag", core.BMPString), ("flags", core.Integer), ("value", core.OctetString)]


class Attribute(core.Sequence):
    _fields = [("type", core.ObjectIdentifier), ("values", core.SetOf, {"spec": core.Any})]


class Attributes(core.SetOf):
    _child_spec = Attribute


class TrustedSubject(core.Sequence):
    _fields = [("identifier", core.OctetString), ("attributes", Attributes, {"optional": True})]


class TrustedSubjects(core.SequenceOf):
    _child_spec = TrustedSubject


class Extension(core.Sequence):
    _fields = [("id", core.ObjectIdentifier), ("value", core.OctetString)]


class Extensions(core.SequenceOf):
    _child_spec = Extension


class CertificateTrustList(core.Sequence):
    _fields = [
        ("subject_usage", core.SequenceOf, {"spec": core.ObjectIdentifier}),
        ("list_identifier", core.OctetString, {"optional": True}),
        ("this_update", core.UTCTime),
        ("subject_algorithm", algos.DigestAlgorithm),
        ("trusted_subjects", TrustedSubjects, {"optional": True}),
        ("extensions", Extensions, {"explicit": 0, "optional": True}),
    ]


class EncapsulatedCtl(core.Sequence):
    _fields = [
        ("content_type", core.ObjectIdentifier),
        ("content", CertificateTrustList, {"explicit": 0}),
    ]


class CatalogSignedData(core.Sequence):
    _fields = [
        ("version", core.Integer),
        ("digest_algorithms", core.SetOf, {"spec": core.Any}),
        ("encap_content_info", EncapsulatedCtl),
        ("signer_infos", core.SetOf, {"spec": core.Any}),
    ]


class CatalogContentInfo(core.Sequence):
    _fields = [
        ("content_type", core.ObjectIdentifier),
        ("content", CatalogSignedData, {"explicit": 0}),
    ]


@dataclass(frozen=True)
class Entry:
    digest: bytes
    name: str | None = None
    page_hashes: bytes | None = None  # raw table


def _any(value: core.Asn1Value) -> core.Any:
    return core.Any.load(value.dump())


def _member(entry: Entry, algorithm: str) -> TrustedSubject:
    if entry.page_hashes is not None:
        table = PageHashAttribute(
            {"type": PAGE_HASH_OIDS[algorithm], "values": [entry.page_hashes]}
        )
        serialized = PageHashAttributes([table]).dump()
        link = SpcLink(
            name="moniker",
            value=SpcSerializedObject(
                {"class_id": PAGE_HASH_CLASS_ID, "serialized_data": serialized}
            ),
        )
    else:
        link = SpcLink(name="file", value={"unicode": "<<<Obsolete>>>"})
    pe_data = SpcPeImageData({"flags": set(), "file": link})
    indirect = SpcIndirectDataContent(
        {
            "data": SpcAttributeTypeAndOptionalValue(
                {"type": "1.3.6.1.4.1.311.2.1.15", "value": _any(pe_data)}
            ),
            "message_digest": DigestInfo(
                {"digest_algorithm": {"algorithm": algorithm}, "digest": entry.digest}
            ),
        }
    )
    attributes = [{"type": "1.3.6.1.4.1.311.2.1.4", "values": [_any(indirect)]}]
    if entry.name is not None:
        name_value = NameValue(
            {"tag": "File", "flags": 0x10010001, "value": (entry.name + "\0").encode("utf-16-le")}
        )
        attributes.append({"type": "1.3.6.1.4.1.311.12.2.1", "values": [_any(name_value)]})
    # v1 tags are the UTF-16LE text of the upper-case hex digest, v2 tags the raw digest.
    tag = entry.digest.hex().upper().encode("utf-16-le") if algorithm == "sha1" else entry.digest
    return TrustedSubject({"identifier": tag, "attributes": attributes})


def build_catalog(
    entries: Sequence[Entry],
    algorithm: str = "sha256",
    *,
    attributes: dict[str, str] | None = None,
    this_update: datetime = datetime(2026, 1, 1, tzinfo=UTC),
) -> bytes:
    """DER of an unsigned catalog listing ``entries`` (digests of ``algorithm``)."""
    extensions = [
        {
            "id": "1.3.6.1.4.1.311.12.2.1",
            "value": NameValue(
                {"tag": key, "flags": 0x10010001, "value": (val + "\0").encode("utf-16-le")}
            ).dump(),
        }
        for key, val in (attributes or {}).items()
    ]
    ctl_fields: dict[str, object] = {
        "subject_usage": ["1.3.6.1.4.1.311.12.1.1"],
        "list_identifier": hashlib.md5(b"".join(e.digest for e in entries)).digest(),
        "this_update": this_update,
        "subject_algorithm": {"algorithm": MEMBER_OIDS[algorithm]},
        "trusted_subjects": [_member(e, algorithm) for e in entries],
    }
    if extensions:
        ctl_fields["extensions"] = extensions
    ctl = CertificateTrustList(ctl_fields)
    info = CatalogContentInfo(
        {
            "content_type": "1.2.840.113549.1.7.2",
            "content": {
                "version": 1,
                "digest_algorithms": [],
                "encap_content_info": {"content_type": CTL, "content": ctl},
                "signer_infos": [],
            },
        }
    )
    return info.dump()


def fake_digest(seed: int, algorithm: str = "sha256") -> bytes:
    return hashlib.new(algorithm, seed.to_bytes(8, "little")).digest()
