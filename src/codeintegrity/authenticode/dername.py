"""Certificate Names read straight from DER, without a full asn1crypto parse.

A root program holds hundreds of anchors; indexing them by subject must cost milliseconds, so
the subject is found by walking the first TLVs of each certificate, and a loose comparison key
(string type, case and spacing ignored) is built the same way.
"""

from __future__ import annotations

from typing import Any


def subject_der(der: bytes) -> bytes | None:
    """The DER of tbsCertificate.subject, found by walking the first TLVs (no full parse).

    Certificate ::= SEQ { tbs SEQ { [0] version OPTIONAL, serial, sigAlg, issuer, validity,
    subject, ... } ... }. Returns None when the bytes do not have that shape.
    """
    try:
        pos, _ = _tlv_header(der, 0, 0x30)
        pos, _ = _tlv_header(der, pos, 0x30)
        if der[pos] == 0xA0:  # explicit version
            pos = _skip(der, pos)
        for _field in range(4):  # serial, signature algorithm, issuer, validity
            pos = _skip(der, pos)
        end = _skip(der, pos)
        if der[pos] != 0x30 or end > len(der):
            return None
        return der[pos:end]
    except IndexError:
        return None


_STRING_CODECS = {
    0x0C: "utf-8",  # UTF8String
    0x13: "latin-1",  # PrintableString
    0x14: "latin-1",  # TeletexString (T.61; latin-1 is close enough for a loose key)
    0x16: "latin-1",  # IA5String
    0x1A: "latin-1",  # VisibleString
    0x1C: "utf-32-be",  # UniversalString
    0x1E: "utf-16-be",  # BMPString
}


def loose_name_key(name_der: bytes) -> tuple[Any, ...] | None:
    """Name DER -> ((attribute type OID bytes, case-folded single-spaced text), ...) per RDN,
    by walking the TLVs (no asn1crypto parse). None when the bytes are not a Name."""
    try:
        pos, length = _tlv_header(name_der, 0, 0x30)
        end = pos + length
        rdns: list[tuple[Any, ...]] = []
        while pos < end:
            set_pos, set_len = _tlv_header(name_der, pos, 0x31)
            pos = set_pos + set_len
            attrs: list[tuple[bytes, str]] = []
            while set_pos < pos:
                atv_pos, atv_len = _tlv_header(name_der, set_pos, 0x30)
                set_pos = atv_pos + atv_len
                oid_end = _skip(name_der, atv_pos)
                value_tag = name_der[oid_end]
                value_pos, value_len = _tlv_header(name_der, oid_end, value_tag)
                raw = name_der[value_pos : value_pos + value_len]
                codec = _STRING_CODECS.get(value_tag)
                text = raw.decode(codec, "replace") if codec else raw.hex()
                attrs.append((name_der[atv_pos:oid_end], " ".join(text.casefold().split())))
            rdns.append(tuple(sorted(attrs)))
        return tuple(rdns)
    except IndexError:
        return None


def _tlv_header(der: bytes, pos: int, tag: int) -> tuple[int, int]:
    """Position of the contents of the TLV at ``pos`` (which must carry ``tag``) and its length."""
    if der[pos] != tag:
        raise IndexError("unexpected tag")
    length = der[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4:
            raise IndexError("unsupported length")
        length = int.from_bytes(der[pos : pos + count], "big")
        pos += count
    return pos, length


def _skip(der: bytes, pos: int) -> int:
    """Position just after the TLV at ``pos``."""
    start, length = _tlv_header(der, pos, der[pos])
    return start + length
