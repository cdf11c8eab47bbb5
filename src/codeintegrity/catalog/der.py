"""A strict, minimal DER walker for catalogs, built on :class:`~codeintegrity.reader.Reader`.

Catalogs can list hundreds of thousands of members, so the CTL is walked directly instead of
through a generic ASN.1 library: every read is bounds-checked by the Reader, every element must
end inside its parent, and every failure is a :class:`MalformedCatalog` naming the offset.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import NamedTuple

from ..errors import MalformedCatalog
from ..reader import Reader

# Universal and context tags used by PKCS#7 and the CTL.
BOOLEAN = 0x01
INTEGER = 0x02
BIT_STRING = 0x03
OCTET_STRING = 0x04
NULL = 0x05
OID = 0x06
UTF8_STRING = 0x0C
PRINTABLE_STRING = 0x13
IA5_STRING = 0x16
UTC_TIME = 0x17
GENERALIZED_TIME = 0x18
BMP_STRING = 0x1E
SEQUENCE = 0x30
SET = 0x31
CONTEXT_0 = 0xA0
CONTEXT_1 = 0xA1
CONTEXT_2 = 0xA2

_MAX_LENGTH_OCTETS = 4  # lengths up to 4 GiB; anything longer cannot fit the size limit anyway
_MAX_OID_ARCS = 64

_oid_cache: dict[bytes, str] = {}


class Tlv(NamedTuple):
    """One DER element: tag byte, offset of its header, of its contents and of its end."""

    tag: int
    start: int
    body: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.body


def reader(data: bytes | bytearray | memoryview) -> Reader:
    return Reader(data, MalformedCatalog)


def read_tlv(r: Reader, offset: int, limit: int, field: str) -> Tlv:
    """Read the element at ``offset``; it must end at or before ``limit``."""
    if offset >= limit:
        raise r.fail(offset, field, "element expected but its parent ends here")
    if offset + 2 > limit:
        raise r.fail(offset, field, "element header overruns its parent")
    r.require(offset, 2, field)  # one bounds check for both header bytes (hot path)
    view = r.view
    tag = view[offset]
    if tag & 0x1F == 0x1F:
        raise r.fail(offset, field, "high tag numbers are not used in catalogs")
    first = view[offset + 1]
    body = offset + 2
    if first < 0x80:
        length = first
    elif first == 0x80:
        raise r.fail(offset, field, "indefinite length (BER) is not DER")
    else:
        count = first & 0x7F
        if count > _MAX_LENGTH_OCTETS:
            raise r.fail(offset, field, f"length of {count} octets is too large")
        length = int.from_bytes(r.bytes(body, count, field), "big")
        body += count
    end = body + length
    if end > limit or end > len(r):
        raise r.fail(offset, field, f"element of {length} bytes overruns its parent")
    return Tlv(tag, offset, body, end)


def expect(r: Reader, offset: int, limit: int, tag: int, field: str) -> Tlv:
    tlv = read_tlv(r, offset, limit, field)
    if tlv.tag != tag:
        raise r.fail(offset, field, f"expected tag {tag:#04x}, found {tlv.tag:#04x}")
    return tlv


def children(r: Reader, parent: Tlv, field: str) -> list[Tlv]:
    """The elements inside a constructed element, which must fill it exactly."""
    if not parent.tag & 0x20:
        raise r.fail(parent.start, field, "expected a constructed element")
    out: list[Tlv] = []
    offset = parent.body
    while offset < parent.end:
        tlv = read_tlv(r, offset, parent.end, field)
        out.append(tlv)
        offset = tlv.end
    return out


def only_child(r: Reader, parent: Tlv, field: str) -> Tlv:
    items = children(r, parent, field)
    if len(items) != 1:
        raise r.fail(parent.start, field, f"expected exactly one element, found {len(items)}")
    return items[0]


def contents(r: Reader, tlv: Tlv, field: str) -> bytes:
    return r.bytes(tlv.body, tlv.length, field)


def oid(r: Reader, tlv: Tlv, field: str) -> str:
    """Dotted form of an OBJECT IDENTIFIER element."""
    if tlv.tag != OID:
        raise r.fail(tlv.start, field, f"expected an OID, found tag {tlv.tag:#04x}")
    raw = contents(r, tlv, field)
    cached = _oid_cache.get(raw)
    if cached is not None:
        return cached
    if not raw or raw[-1] & 0x80:
        raise r.fail(tlv.start, field, "OID is empty or truncated")
    arcs: list[int] = []
    value = 0
    fresh = True
    for byte in raw:
        if fresh and byte == 0x80:
            raise r.fail(tlv.start, field, "OID arc is not minimally encoded")
        value = (value << 7) | (byte & 0x7F)
        fresh = not byte & 0x80
        if fresh:
            arcs.append(value)
            value = 0
    if len(arcs) > _MAX_OID_ARCS:
        raise r.fail(tlv.start, field, "OID has too many arcs")
    first = min(arcs[0] // 40, 2)
    dotted = ".".join(str(a) for a in (first, arcs[0] - 40 * first, *arcs[1:]))
    if len(_oid_cache) < 4096:  # OIDs repeat in every member; the cache stays small
        _oid_cache[raw] = dotted
    return dotted


def integer(r: Reader, tlv: Tlv, field: str) -> int:
    if tlv.tag != INTEGER or tlv.length == 0:
        raise r.fail(tlv.start, field, "expected a non-empty INTEGER")
    if tlv.length > 16:
        raise r.fail(tlv.start, field, "INTEGER is implausibly large")
    return int.from_bytes(contents(r, tlv, field), "big", signed=True)


def bmp_string(r: Reader, tlv: Tlv, field: str) -> str:
    if tlv.tag != BMP_STRING:
        raise r.fail(tlv.start, field, f"expected a BMPString, found tag {tlv.tag:#04x}")
    return contents(r, tlv, field).decode("utf-16-be", errors="replace")


def time(r: Reader, tlv: Tlv, field: str) -> datetime:
    """UTCTime (YYMMDDHHMMSSZ, years 1950-2049) or GeneralizedTime (YYYYMMDDHHMMSSZ)."""
    text = contents(r, tlv, field).decode("ascii", errors="replace")
    if tlv.tag == UTC_TIME and len(text) == 13 and text.endswith("Z") and text[:12].isdigit():
        year = int(text[:2])
        year += 2000 if year < 50 else 1900
        rest = text[2:12]
    elif (
        tlv.tag == GENERALIZED_TIME
        and len(text) == 15
        and text.endswith("Z")
        and text[:14].isdigit()
    ):
        year = int(text[:4])
        rest = text[4:14]
    else:
        raise r.fail(tlv.start, field, f"unsupported time encoding {text!r}")
    month, day, hour, minute, second = (int(rest[i : i + 2]) for i in range(0, 10, 2))
    try:
        return datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError as exc:
        raise r.fail(tlv.start, field, f"invalid time {text!r}: {exc}") from None
