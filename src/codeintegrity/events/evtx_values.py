"""Typed EVTX substitution values: which BinXML value type each field is written as, and the
bytes of a value.

An :class:`~.model.Event` holds every EventData value as the text Windows shows; an .evtx record
holds typed values (a UInt32 is four bytes, a SID its binary form), as the manifest declares
them. A value is written with its manifest type only when its text is that type's canonical
rendering (so a reader renders back exactly the text we hold); anything else is written as a
UTF-16 string, so no value is ever altered or lost. Value types: [MS-EVEN6] 2.2.12 / libyal's
EVTX documentation, "Value types".
"""

from __future__ import annotations

import re
import struct
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from .model import parse_system_time

# BinXML value types.
T_NULL = 0x00
T_STRING = 0x01
T_UINT8 = 0x04
T_UINT16 = 0x06
T_UINT32 = 0x08
T_UINT64 = 0x0A
T_BOOL = 0x0D
T_BINARY = 0x0E
T_GUID = 0x0F
T_FILETIME = 0x11
T_SID = 0x13
T_HEX32 = 0x14
T_HEX64 = 0x15

_FILETIME_EPOCH = datetime(1601, 1, 1, tzinfo=UTC)
_U32 = struct.Struct("<I").pack
_U64 = struct.Struct("<Q").pack

Encoder = Callable[[str], bytes | None]


def filetime(when: datetime, extra_100ns: int = 0) -> int:
    """A timezone-aware datetime as FILETIME (100 ns ticks since 1601-01-01 UTC)."""
    delta = when - _FILETIME_EPOCH
    return (delta.days * 86400 + delta.seconds) * 10_000_000 + delta.microseconds * 10 + extra_100ns


def _uint(limit: int, pack: Callable[[int], bytes]) -> Encoder:
    def encode(text: str) -> bytes | None:
        # Canonical decimal only: "007" or "+7" would not render back as written.
        if not text.isdigit() or not text.isascii() or (len(text) > 1 and text[0] == "0"):
            return None
        value = int(text)
        return pack(value) if value < limit else None

    return encode


def _hex(limit: int, pack: Callable[[int], bytes]) -> Encoder:
    def encode(text: str) -> bytes | None:
        # Windows renders HexInt32/64 as 0x with lowercase digits and no leading zeros.
        if re.fullmatch(r"0x(?:0|[1-9a-f][0-9a-f]*)", text) is None:
            return None
        value = int(text, 16)
        return pack(value) if value < limit else None

    return encode


def _bool(text: str) -> bytes | None:
    if text == "true":
        return _U32(1)
    if text == "false":
        return _U32(0)
    return None


def _binary(text: str) -> bytes | None:
    # Windows renders Binary as upper-case hex; an empty value stays a (null) string.
    if not text or len(text) % 2 or re.fullmatch(r"[0-9A-F]+", text) is None:
        return None
    return bytes.fromhex(text)


def encode_guid(text: str) -> bytes | None:
    if re.fullmatch(r"\{[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}\}", text) is None:
        return None
    return uuid.UUID(text).bytes_le


def encode_sid(text: str) -> bytes | None:
    match = re.fullmatch(r"S-1-(\d+)((?:-\d+){0,15})", text)
    if match is None:
        return None
    authority = int(match.group(1))
    subs = [int(s) for s in match.group(2).split("-")[1:]]
    if authority >= 1 << 48 or any(s >= 1 << 32 for s in subs):
        return None
    if text != "S-1-" + "-".join(str(n) for n in (authority, *subs)):
        return None  # leading zeros would not render back
    return bytes((1, len(subs))) + authority.to_bytes(6, "big") + b"".join(map(_U32, subs))


def _filetime_text(text: str) -> bytes | None:
    try:
        when = parse_system_time(text)
    except ValueError:
        return None
    fraction = text.partition(".")[2][:-1]
    if len(fraction) != 7:
        return None
    return _U64(filetime(when, int(fraction[6])))


_ENCODERS: dict[int, Encoder] = {
    T_UINT8: _uint(1 << 8, lambda v: bytes((v,))),
    T_UINT16: _uint(1 << 16, struct.Struct("<H").pack),
    T_UINT32: _uint(1 << 32, _U32),
    T_UINT64: _uint(1 << 64, _U64),
    T_HEX32: _hex(1 << 32, _U32),
    T_HEX64: _hex(1 << 64, _U64),
    T_BOOL: _bool,
    T_BINARY: _binary,
    T_GUID: encode_guid,
    T_SID: encode_sid,
    T_FILETIME: _filetime_text,
}

# The manifest types of EventData fields (Security-Auditing and CodeIntegrity manifests, research
# notes sections 1-2); a field not listed is a UnicodeString.
_U32_FIELDS = {
    "FileNameLength", "ProcessNameLength", "RequestedPolicy", "ValidatedPolicy",
    "RequirementType", "Requested Signing Level", "Validated Signing Level",
    "SHA1 Hash Size", "SHA256 Hash Size", "SHA1 Flat Hash Size", "SHA256 Flat Hash Size",
    "SI Signing Scenario", "PolicyNameLength", "PolicyIDLength", "PolicyHashSize",
    "OriginalFileNameLength", "InternalNameLength", "FileDescriptionLength",
    "ProductNameLength", "PackageFamilyNameLength", "TotalSignatureCount", "Signature",
    "CacheState", "Hash Size", "SignatureType", "ValidatedSigningLevel", "VerificationError",
    "Flags", "PolicyBits", "PublisherNameLength", "IssuerNameLength", "PublisherTBSHashSize",
    "IssuerTBSHashSize", "AuditsDiscarded", "RequestedSigningLevel",
}  # fmt: skip
_BINARY_FIELDS = {
    "SHA1 Hash", "SHA256 Hash", "SHA1 Flat Hash", "SHA256 Flat Hash", "PolicyHash", "Hash",
    "PublisherTBSHash", "IssuerTBSHash",
}  # fmt: skip
FIELD_TYPES: dict[str, int] = {
    **dict.fromkeys(_U32_FIELDS, T_UINT32),
    **dict.fromkeys(_BINARY_FIELDS, T_BINARY),
    "USN": T_UINT64,
    "Status": T_HEX32,  # 3063 writes 0x...; 3033's decimal Status falls back per value below
    "ReturnCode": T_HEX32,
    "SecureRequired": T_HEX32,
    "SubjectLogonId": T_HEX64,
    "SubjectUserSid": T_SID,
    "PageHash": T_BOOL,
    "UserWriteable": T_BOOL,
    "NotValidBefore": T_FILETIME,
    "NotValidAfter": T_FILETIME,
    "PolicyGUID": T_GUID,
}
# A value whose text is not its declared type's rendering tries these next, then a string.
_FALLBACK = {T_HEX32: T_UINT32}


def field_type(name: str) -> int:
    return FIELD_TYPES.get(name, T_STRING)


def encode_value(declared: int, text: str) -> tuple[int, bytes]:
    """(value type, bytes) of one EventData value declared as ``declared``."""
    if not text:
        return T_STRING, b""  # an empty value: an empty string (libevtx refuses a null here)
    if declared != T_STRING:
        data = _ENCODERS[declared](text)
        if data is not None:
            return declared, data
        second = _FALLBACK.get(declared)
        if second is not None:
            data = _ENCODERS[second](text)
            if data is not None:
                return second, data
    return T_STRING, text.encode("utf-16-le", "surrogatepass")
