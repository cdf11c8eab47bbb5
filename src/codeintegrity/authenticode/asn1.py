"""asn1crypto specifications of the Microsoft structures inside an Authenticode signature.

Shapes follow what signers actually emit (osslsigncode, signtool), not the Authenticode_PE.docx
text: ``SpcAttributeTypeAndOptionalValue.value`` has no ``[0]`` tag in real files.

Also a small DER walker (:func:`read_tlv`, :func:`children`, :func:`encode_tlv`) used to cut the
page-hash tables out of a signature without copies.
"""

from __future__ import annotations

from asn1crypto import algos, core

from ..reader import Reader


class SpcAttributeTypeAndOptionalValue(core.Sequence):
    _fields = [
        ("type", core.ObjectIdentifier),
        ("value", core.Any, {"optional": True}),
    ]


class DigestInfo(core.Sequence):
    _fields = [
        ("digest_algorithm", algos.DigestAlgorithm),
        ("digest", core.OctetString),
    ]


class SpcIndirectDataContent(core.Sequence):
    _fields = [
        ("data", SpcAttributeTypeAndOptionalValue),
        ("message_digest", DigestInfo),
    ]


class SpcString(core.Choice):
    _alternatives = [
        ("unicode", core.BMPString, {"implicit": 0}),
        ("ascii", core.IA5String, {"implicit": 1}),
    ]


class SpcSerializedObject(core.Sequence):
    _fields = [
        ("class_id", core.OctetString),
        ("serialized_data", core.OctetString),
    ]


class SpcLink(core.Choice):
    _alternatives = [
        ("url", core.IA5String, {"implicit": 0}),
        ("moniker", SpcSerializedObject, {"implicit": 1}),
        ("file", SpcString, {"explicit": 2}),
    ]


class SpcPeImageFlags(core.BitString):
    _map = {0: "include_resources", 1: "include_debug_info", 2: "include_import_address_table"}


class SpcPeImageData(core.Sequence):
    _fields = [
        ("flags", SpcPeImageFlags, {"optional": True}),
        ("file", SpcLink, {"explicit": 0, "optional": True}),
    ]


class PageHashValues(core.SetOf):
    # "unnecessary SET wrapped around the octets" (relic): one OCTET STRING holding the table
    _child_spec = core.OctetString


class PageHashAttribute(core.Sequence):
    _fields = [
        ("type", core.ObjectIdentifier),
        ("values", PageHashValues),
    ]


class PageHashAttributes(core.SetOf):
    _child_spec = PageHashAttribute


# -- locating the page-hash table without copies ---------------------------------------------
#
# asn1crypto copies a value's contents at every level it parses, and a page-hash table sits
# about fifteen levels deep (1.8 MB for a 200 MiB image: ~28 MB of copies). The walker below
# reads definite-length DER through the bounds-checked Reader over a memoryview, so the table
# can be cut out of the signature and asn1crypto validates a copy in which it is empty.


class Tlv:
    """One DER value: identifier octet, and where its contents start and end.

    (A plain class: a dataclass costs about a millisecond to create at import.)"""

    __slots__ = ("tag", "start", "body", "end")

    def __init__(self, tag: int, start: int, body: int, end: int) -> None:
        self.tag, self.start, self.body, self.end = tag, start, body, end


def read_tlv(reader: Reader, pos: int, end: int) -> Tlv:
    """The value at ``pos`` that must end by ``end`` (single-octet tags, definite lengths)."""
    tag = reader.u8(pos, "DER tag")
    if tag & 0x1F == 0x1F:
        raise reader.fail(pos, "DER tag", "multi-octet tag")
    first = reader.u8(pos + 1, "DER length")
    if first < 0x80:
        length, body = first, pos + 2
    elif first == 0x80 or first > 0x84:
        raise reader.fail(pos + 1, "DER length", f"length form {first:#x} is not used here")
    else:
        count = first & 0x7F
        length = int.from_bytes(reader.slice(pos + 2, count, "DER length"), "big")
        body = pos + 2 + count
    if body + length > end:
        raise reader.fail(pos, "DER value", f"{length} bytes run past {end:#x}")
    return Tlv(tag, pos, body, body + length)


def children(reader: Reader, parent: Tlv) -> list[Tlv]:
    """The values that exactly fill ``parent``'s contents."""
    out = []
    pos = parent.body
    while pos < parent.end:
        child = read_tlv(reader, pos, parent.end)
        out.append(child)
        pos = child.end
    return out


def encode_tlv(tag: int, body: bytes) -> bytes:
    """DER header (minimal length) + ``body``."""
    size = len(body)
    if size < 0x80:
        return bytes((tag, size)) + body
    octets = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(octets))) + octets + body
