"""Binary XML templates of our events, as Windows writes them into .evtx chunks.

Every record is a fragment holding one TemplateInstance: the template (the element tree of the
event with substitution tokens where values go) is defined once per chunk, the first time a
record of its kind lands there, and later records point at it. The System block has the
substitutions and types Windows itself uses (checked against the real Security.evtx samples:
Provider Name string, Guid GUID, EventID UInt16, Level/Opcode/Version UInt8, Task UInt16,
Keywords HexInt64, TimeCreated FILETIME, EventRecordID UInt64, ActivityID optional GUID,
ProcessID/ThreadID UInt32, Channel/Computer string, UserID optional SID); EventData holds one
``<Data Name=...>`` per field with a substitution of the field's manifest type.

Token layout: [MS-EVEN6] 2.2.12 and libyal's EVTX documentation. Element names live in the
chunk's string table: the first use in a chunk writes the name in place, later uses point at it.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from dataclasses import dataclass
from functools import lru_cache

from .evtx_values import (
    T_FILETIME,
    T_GUID,
    T_HEX64,
    T_SID,
    T_STRING,
    T_UINT8,
    T_UINT16,
    T_UINT32,
    T_UINT64,
    field_type,
)
from .render_xml import EVENT_NAMESPACE
from .schema import KINDS

TOKEN_EOF = 0x00
TOKEN_OPEN = 0x01
TOKEN_CLOSE_START = 0x02
TOKEN_CLOSE_EMPTY = 0x03
TOKEN_END = 0x04
TOKEN_VALUE = 0x05
TOKEN_ATTRIBUTE = 0x06
TOKEN_TEMPLATE = 0x0C
TOKEN_NORMAL_SUB = 0x0D
TOKEN_OPTIONAL_SUB = 0x0E
MORE = 0x40  # "has attributes" on an element, "another attribute follows" on an attribute
FRAGMENT_HEADER = b"\x0f\x01\x01\x00"

# Substitution indexes of the System block (the event's own values follow from FIRST_DATA).
SUB_PROVIDER, SUB_GUID, SUB_EVENT_ID, SUB_VERSION, SUB_LEVEL, SUB_TASK = range(6)
SUB_OPCODE, SUB_KEYWORDS, SUB_TIME, SUB_RECORD_ID, SUB_ACTIVITY = range(6, 11)
SUB_PID, SUB_TID, SUB_CHANNEL, SUB_COMPUTER, SUB_USER = range(11, 16)
FIRST_DATA = 16
SYSTEM_TYPES = (
    T_STRING, T_GUID, T_UINT16, T_UINT8, T_UINT8, T_UINT16, T_UINT8, T_HEX64, T_FILETIME,
    T_UINT64, T_GUID, T_UINT32, T_UINT32, T_STRING, T_STRING, T_SID,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Sub:
    index: int
    value_type: int
    optional: bool = False


@dataclass(frozen=True, slots=True)
class Element:
    name: str
    attributes: tuple[tuple[str, str | Sub], ...] = ()
    children: tuple[Element | Sub | str, ...] = ()


def name_hash(name: str) -> int:
    """The 16-bit name hash of [MS-EVEN6]: h = h * 65599 + code unit, low 16 bits kept."""
    value = 0
    for unit in struct.unpack(f"<{len(name)}H", name.encode("utf-16-le")):
        value = (value * 65599 + unit) & 0xFFFFFFFF
    return value & 0xFFFF


def _el(name: str, *children: Element | Sub | str, **attrs: str | Sub) -> Element:
    return Element(name, tuple(attrs.items()), children)


@dataclass(frozen=True, slots=True)
class Template:
    """The element tree of one event kind with its stable id and GUID."""

    template_id: int
    guid: bytes
    root: Element
    types: tuple[int, ...]  # declared value type of every substitution, by index


@lru_cache(maxsize=64)
def template_for(event_id: int) -> Template:
    kind = KINDS[event_id]
    types = (*SYSTEM_TYPES, *map(field_type, kind.fields))
    system = _el(
        "System",
        _el("Provider", Name=Sub(SUB_PROVIDER, T_STRING), Guid=Sub(SUB_GUID, T_GUID)),
        _el("EventID", Sub(SUB_EVENT_ID, T_UINT16)),
        _el("Version", Sub(SUB_VERSION, T_UINT8)),
        _el("Level", Sub(SUB_LEVEL, T_UINT8)),
        _el("Task", Sub(SUB_TASK, T_UINT16)),
        _el("Opcode", Sub(SUB_OPCODE, T_UINT8)),
        _el("Keywords", Sub(SUB_KEYWORDS, T_HEX64)),
        _el("TimeCreated", SystemTime=Sub(SUB_TIME, T_FILETIME)),
        _el("EventRecordID", Sub(SUB_RECORD_ID, T_UINT64)),
        _el("Correlation", ActivityID=Sub(SUB_ACTIVITY, T_GUID, optional=True)),
        _el("Execution", ProcessID=Sub(SUB_PID, T_UINT32), ThreadID=Sub(SUB_TID, T_UINT32)),
        _el("Channel", Sub(SUB_CHANNEL, T_STRING)),
        _el("Computer", Sub(SUB_COMPUTER, T_STRING)),
        _el("Security", UserID=Sub(SUB_USER, T_SID, optional=True)),
    )
    data = tuple(
        Element("Data", (("Name", name),), (Sub(FIRST_DATA + i, types[FIRST_DATA + i]),))
        for i, name in enumerate(kind.fields)
    )
    root = Element("Event", (("xmlns", EVENT_NAMESPACE),), (system, Element("EventData", (), data)))
    # The id and GUID follow from the shape, so a reopened file finds its templates again.
    shape = repr((root, types)).encode()
    digest = hashlib.sha256(shape).digest()
    template_id = zlib.crc32(shape)
    return Template(template_id, struct.pack("<I", template_id) + digest[:12], root, types)


class NameTable:
    """The element and attribute names defined in one chunk (its 64-bucket string table)."""

    def __init__(self) -> None:
        self.buckets = [0] * 64

    def add(self, hashed: int, offset: int) -> None:
        """Chain the name defined at chunk offset ``offset`` into its bucket: newest first,
        each entry pointing at the one it displaced (as Windows chains them)."""
        bucket = hashed % 64
        self.buckets[bucket] = offset


class _Layout:
    """A template serialised at chunk offset 0: where its name-offset fields and its names
    are, so placing it elsewhere is a copy plus a few additions."""

    def __init__(self) -> None:
        self.body = bytearray()
        self.fields: list[int] = []  # positions of u32 name offsets (relative values)
        self.names: list[tuple[int, int]] = []  # (position of a name, its hash)
        self.seen: dict[str, int] = {}

    def name(self, name: str) -> None:
        known = self.seen.get(name)
        self.fields.append(len(self.body))
        if known is not None:
            self.body += struct.pack("<I", known)
            return
        at = len(self.body) + 4
        hashed = name_hash(name)
        self.seen[name] = at
        self.names.append((at, hashed))
        # next-string offset (patched when placed), hash, length, UTF-16 name, NUL
        self.body += struct.pack("<IIHH", at, 0, hashed, len(name))
        self.body += name.encode("utf-16-le") + b"\0\0"


def _sub(sub: Sub) -> bytes:
    token = TOKEN_OPTIONAL_SUB if sub.optional else TOKEN_NORMAL_SUB
    return struct.pack("<BHB", token, sub.index, sub.value_type)


def _text(text: str) -> bytes:
    return struct.pack("<BBH", TOKEN_VALUE, T_STRING, len(text)) + text.encode("utf-16-le")


def _element(element: Element, out: _Layout) -> None:
    body = out.body
    start = len(body)
    # token, dependency id (none), data size (patched below), name offset (+ inline name)
    body += struct.pack("<BHI", TOKEN_OPEN | (MORE if element.attributes else 0), 0xFFFF, 0)
    out.name(element.name)
    if element.attributes:
        size_at = len(body)
        body += b"\0\0\0\0"
        for i, (name, value) in enumerate(element.attributes):
            last = i == len(element.attributes) - 1
            body.append(TOKEN_ATTRIBUTE | (0 if last else MORE))
            out.name(name)
            body += _sub(value) if isinstance(value, Sub) else _text(value)
        struct.pack_into("<I", body, size_at, len(body) - size_at - 4)
    if not element.children:
        body.append(TOKEN_CLOSE_EMPTY)
    else:
        body.append(TOKEN_CLOSE_START)
        for child in element.children:
            if isinstance(child, Element):
                _element(child, out)
            elif isinstance(child, Sub):
                body += _sub(child)
            else:
                body += _text(child)
        body.append(TOKEN_END)
    struct.pack_into("<I", body, start + 3, len(body) - start - 7)  # from after the size field


@lru_cache(maxsize=64)
def _layout(template: Template) -> tuple[bytes, tuple[int, ...], tuple[tuple[int, int], ...]]:
    """The definition (next-template offset, GUID, size, body) laid out at offset 0."""
    out = _Layout()
    out.body += b"\0\0\0\0" + template.guid + b"\0\0\0\0"
    out.body += FRAGMENT_HEADER
    _element(template.root, out)
    out.body.append(TOKEN_EOF)
    struct.pack_into("<I", out.body, 20, len(out.body) - 24)
    return bytes(out.body), tuple(out.fields), tuple(out.names)


def template_definition(template: Template, names: NameTable, at: int, next_offset: int) -> bytes:
    """The resident template definition placed at chunk offset ``at``: next-template offset,
    GUID, body size, then the body (fragment header, the element tree, EOF). Its names are
    written inside it (each once) and chained into the chunk's string table."""
    raw, fields, defined = _layout(template)
    body = bytearray(raw)
    struct.pack_into("<I", body, 0, next_offset)
    for field in fields:
        struct.pack_into("<I", body, field, struct.unpack_from("<I", body, field)[0] + at)
    for position, hashed in defined:
        bucket = hashed % 64
        struct.pack_into("<I", body, position, names.buckets[bucket])  # the displaced entry
        names.add(hashed, at + position)
    return bytes(body)
