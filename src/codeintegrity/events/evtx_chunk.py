"""The .evtx file layout: the 4 KiB file header and the 64 KiB chunks that hold the records.

Layout (libyal's EVTX documentation, checked against Security.evtx files written by Windows):

* file header: ``ElfFile\\0``, first/last chunk number, next record identifier, header size 128,
  version 3.1, header block size 4096, chunk count, flags (1 = dirty, 2 = full) and a CRC32 of
  its first 120 bytes; zero up to 4096.
* chunk: ``ElfChnk\\0``, first/last record number and identifier, header size 128, offsets of
  the last record and of the free space, CRC32 of the record bytes, flags, CRC32 of the header
  (bytes 0-120 and 128-512), then the 64 common-string buckets and 32 template buckets; records
  from offset 512.
* record: ``**\\0\\0``, size, record identifier, FILETIME written, binary XML, size again.

Everything here is a pure function over bytes; :mod:`.evtx_sink` does the file I/O.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from ..errors import SinkError
from .evtx_binxml import (
    FIRST_DATA,
    FRAGMENT_HEADER,
    SYSTEM_TYPES,
    TOKEN_TEMPLATE,
    NameTable,
    template_definition,
    template_for,
)
from .evtx_values import (
    T_FILETIME,
    T_GUID,
    T_NULL,
    T_SID,
    T_STRING,
    T_UINT32,
    T_UINT64,
    encode_guid,
    encode_sid,
    encode_value,
    filetime,
)
from .model import Event
from .schema import KINDS

FILE_MAGIC = b"ElfFile\0"
CHUNK_MAGIC = b"ElfChnk\0"
RECORD_MAGIC = b"\x2a\x2a\x00\x00"
FILE_HEADER_SIZE = 128
FILE_HEADER_BLOCK = 4096
CHUNK_SIZE = 65536
CHUNK_HEADER_SIZE = 128
RECORDS_START = 512
MAJOR_VERSION, MINOR_VERSION = 3, 1  # what both real samples carry (python-evtx requires 3.1)
FLAG_DIRTY, FLAG_FULL = 0x1, 0x2
CHUNK_FLAGS = 0x1  # what Windows writes at chunk offset 120 (both samples, every chunk)
# libevtx stops one record short when the records reach the very end of a chunk: keep a
# little room free (Windows' own chunks never end flush either).
CHUNK_LIMIT = CHUNK_SIZE - 8

_FILE_HEADER = struct.Struct("<8sQQQIHHHH")
_CHUNK_HEADER = struct.Struct("<8sQQQQIII")
_RECORD_HEAD = struct.Struct("<4sIQQ")
_SYSTEM_STATIC = struct.Struct("<HBBHBQ")


class EvtxFormatError(SinkError):
    """An .evtx file is not one we can append to."""


@dataclass(frozen=True, slots=True)
class FileHeader:
    first_chunk: int
    last_chunk: int
    next_record_id: int
    chunk_count: int
    flags: int
    major: int = MAJOR_VERSION
    minor: int = MINOR_VERSION


def build_file_header(header: FileHeader) -> bytes:
    head = _FILE_HEADER.pack(
        FILE_MAGIC,
        header.first_chunk,
        header.last_chunk,
        header.next_record_id,
        FILE_HEADER_SIZE,
        header.minor,
        header.major,
        FILE_HEADER_BLOCK,
        header.chunk_count,
    ).ljust(120, b"\0") + struct.pack("<I", header.flags)
    return head + struct.pack("<I", zlib.crc32(head[:120])) + bytes(FILE_HEADER_BLOCK - 128)


def parse_file_header(data: bytes) -> FileHeader:
    if len(data) < FILE_HEADER_SIZE or data[:8] != FILE_MAGIC:
        raise EvtxFormatError("not an .evtx file (no ElfFile header)")
    magic, first, last, next_id, size, minor, major, block, count = _FILE_HEADER.unpack_from(data)
    flags, crc = struct.unpack_from("<II", data, 120)
    if crc != zlib.crc32(data[:120]):
        raise EvtxFormatError("the .evtx file header checksum does not match")
    if (major, size, block) != (MAJOR_VERSION, FILE_HEADER_SIZE, FILE_HEADER_BLOCK):
        raise EvtxFormatError(f"unsupported .evtx version {major}.{minor}")
    return FileHeader(first, last, next_id, count, flags, major, minor)


@dataclass(frozen=True, slots=True)
class ChunkSummary:
    first_record_id: int
    last_record_id: int
    records: int


_DESCRIPTOR = struct.Struct("<HBB").pack
_U32 = struct.Struct("<I").pack
_U64 = struct.Struct("<Q").pack


class RecordTooLarge(EvtxFormatError):
    """A value or record that no chunk can hold."""


def _descriptor(value_type: int, data: bytes) -> bytes:
    if len(data) > 0xFFFF:
        raise RecordTooLarge(f"a value of {len(data)} bytes exceeds what a record can hold")
    return _DESCRIPTOR(len(data), value_type, 0)


@lru_cache(maxsize=64)
def _system_static(event_id: int) -> tuple[bytes, bytes, bytes, bytes]:
    """Descriptors and data of the per-kind System values: Provider Name and Guid, EventID,
    Version, Level, Task, Opcode, Keywords (one block), and Channel (another)."""
    kind = KINDS[event_id]
    guid = encode_guid(kind.provider_guid.lower())
    assert guid is not None  # schema constants
    values = [(T_STRING, kind.provider.encode("utf-16-le")), (T_GUID, guid)]
    packed = _SYSTEM_STATIC.pack(
        kind.event_id, kind.version, kind.level, kind.task, kind.opcode, kind.keywords
    )
    cuts = (0, 2, 3, 4, 6, 7, 15)  # EventID 2, Version 1, Level 1, Task 2, Opcode 1, Keywords 8
    for (i, start), end in zip(enumerate(cuts[:-1]), cuts[1:], strict=True):
        values.append((SYSTEM_TYPES[2 + i], packed[start:end]))
    channel = kind.channel.encode("utf-16-le")
    return (
        b"".join(_descriptor(t, d) for t, d in values),
        b"".join(d for _, d in values),
        _descriptor(T_STRING, channel),
        channel,
    )


@lru_cache(maxsize=8192)
def _encoded(declared: int, text: str) -> tuple[bytes, bytes]:
    """(descriptor, data) of one EventData value; the events of a report repeat many."""
    value_type, data = encode_value(declared, text)
    return _descriptor(value_type, data), data


@lru_cache(maxsize=256)
def _text_value(text: str) -> tuple[bytes, bytes]:
    data = text.encode("utf-16-le", "surrogatepass")
    return _descriptor(T_STRING, data), data


@lru_cache(maxsize=256)
def _activity(activity_id: str | None) -> tuple[bytes, bytes]:
    data = encode_guid(activity_id) if activity_id else None
    if data is None:  # none (or not a GUID): a null, so the attribute is left out
        return _NULL, b""
    return _descriptor(T_GUID, data), data


@lru_cache(maxsize=256)
def _user(user_id: str | None) -> tuple[bytes, bytes]:
    if not user_id:
        return _NULL, b""
    data = encode_sid(user_id)
    if data is None:  # not a SID: kept as text rather than dropped
        return _text_value(user_id)
    return _descriptor(T_SID, data), data


@lru_cache(maxsize=256)
def _time(when: datetime, extra_100ns: int) -> bytes:
    return _U64(filetime(when, extra_100ns))


@lru_cache(maxsize=64)
def _data_types(event_id: int) -> tuple[int, ...]:
    return template_for(event_id).types[FIRST_DATA:]


_NULL = _DESCRIPTOR(0, T_NULL, 0)
_D_FILETIME = _DESCRIPTOR(8, T_FILETIME, 0)
_D_U64 = _DESCRIPTOR(8, T_UINT64, 0)
_D_U32 = _DESCRIPTOR(4, T_UINT32, 0)


def substitution_values(event: Event, record_id: int, extra_100ns: int = 0) -> bytes:
    """The substitution array of a record: count, (size, type) descriptors, then the values."""
    static_desc, static_data, channel_desc, channel = _system_static(event.event_id)
    activity_desc, activity = _activity(event.correlation_id)
    computer_desc, computer = _text_value(event.computer)
    user_desc, user = _user(event.user_id)
    descriptors = [
        static_desc, _D_FILETIME, _D_U64, activity_desc, _D_U32, _D_U32, channel_desc,
        computer_desc, user_desc,
    ]  # fmt: skip
    data = [
        static_data,
        _time(event.time_created, extra_100ns),
        _U64(record_id),
        activity,
        _U32(event.process_id & 0xFFFFFFFF),
        _U32(event.thread_id & 0xFFFFFFFF),
        channel,
        computer,
        user,
    ]
    encoded = list(map(_encoded, _data_types(event.event_id), [t for _, t in event.data]))
    descriptors += [pair[0] for pair in encoded]
    data += [pair[1] for pair in encoded]
    count = FIRST_DATA + len(encoded)
    return _U32(count) + b"".join(descriptors) + b"".join(data)


class Chunk:
    """One 64 KiB chunk being filled; :meth:`image` gives its bytes with every header field
    and checksum up to date."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.buffer = bytearray(CHUNK_SIZE)
        self.names = NameTable()
        self.templates: dict[int, int] = {}  # template id -> definition offset
        self.template_buckets = [0] * 32
        self.free = RECORDS_START
        self.last_record_offset = 0
        self.first_record_id = 0
        self.last_record_id = 0
        self.records = 0
        self.data_crc = 0

    def add(self, event: Event, record_id: int) -> bool:
        """Append one record; False when it does not fit (the chunk is then unchanged)."""
        template = template_for(event.event_id)
        at = self.free
        # Record header (24 bytes), fragment header, TemplateInstance (10 bytes).
        instance_at = at + 24 + len(FRAGMENT_HEADER)
        known = self.templates.get(template.template_id)
        names_before: list[int] | None = None
        if known is None:
            names_before = list(self.names.buckets)
            definition_at = instance_at + 10
            bucket = template.template_id % 32
            definition = template_definition(
                template, self.names, definition_at, self.template_buckets[bucket]
            )
        else:
            definition_at, definition = known, b""
        body = (
            FRAGMENT_HEADER
            + struct.pack("<BBII", TOKEN_TEMPLATE, 1, template.template_id, definition_at)
            + definition
            + substitution_values(event, record_id, event.time_100ns)
            + b"\0"  # end of the fragment
        )
        size = 24 + len(body) + 4
        pad = -size % 8  # Windows keeps records 8-byte aligned
        size += pad
        if at + size > CHUNK_LIMIT:
            if names_before is not None:  # the names it defined are not in the chunk
                self.names.buckets = names_before
            return False
        stamp = filetime(event.time_created, event.time_100ns)
        record = (
            _RECORD_HEAD.pack(RECORD_MAGIC, size, record_id, stamp)
            + body
            + bytes(pad)
            + struct.pack("<I", size)
        )
        self.buffer[at : at + size] = record
        if known is None:
            self.templates[template.template_id] = definition_at
            self.template_buckets[template.template_id % 32] = definition_at
        self.data_crc = zlib.crc32(record, self.data_crc)
        self.last_record_offset = at
        self.free = at + size
        if not self.records:
            self.first_record_id = record_id
        self.last_record_id = record_id
        self.records += 1
        return True

    def header(self) -> bytes:
        """The 512-byte chunk header (tables included) for the records held so far."""
        head = bytearray(
            _CHUNK_HEADER.pack(
                CHUNK_MAGIC,
                self.first_record_id,
                self.last_record_id,
                self.first_record_id,
                self.last_record_id,
                CHUNK_HEADER_SIZE,
                self.last_record_offset,
                self.free,
            )
        )
        head += struct.pack("<I", self.data_crc)
        head = head.ljust(120, b"\0") + struct.pack("<I", CHUNK_FLAGS) + b"\0\0\0\0"
        head += struct.pack("<64I", *self.names.buckets)
        head += struct.pack("<32I", *self.template_buckets)
        crc = zlib.crc32(head[128:512], zlib.crc32(head[:120]))
        struct.pack_into("<I", head, 124, crc)
        return bytes(head)

    def image(self) -> bytes:
        self.buffer[:RECORDS_START] = self.header()
        return bytes(self.buffer)

    @classmethod
    def load(cls, number: int, data: bytes) -> Chunk:
        """Rebuild a chunk from its bytes to append to it (tables included); raises
        EvtxFormatError when the chunk is not intact."""
        summary = scan_chunk(data)
        if summary is None:
            raise EvtxFormatError(f"chunk {number} is damaged")
        chunk = cls(number)
        chunk.buffer[:] = data
        _, _, _, _, _, _, last_offset, free = _CHUNK_HEADER.unpack_from(data)
        chunk.free = free
        chunk.last_record_offset = last_offset
        chunk.first_record_id = summary.first_record_id
        chunk.last_record_id = summary.last_record_id
        chunk.records = summary.records
        chunk.data_crc = zlib.crc32(data[RECORDS_START:free])
        chunk.names.buckets = list(struct.unpack_from("<64I", data, 128))
        chunk.template_buckets = list(struct.unpack_from("<32I", data, 384))
        for head in chunk.template_buckets:
            offset, seen = head, 0
            while offset and seen < 4096:
                if offset + 24 > CHUNK_SIZE:
                    raise EvtxFormatError(f"chunk {number}: bad template table")
                nxt, template_id = struct.unpack_from("<II", data, offset)
                chunk.templates.setdefault(template_id, offset)
                offset, seen = nxt, seen + 1
        return chunk


def scan_chunk(data: bytes) -> ChunkSummary | None:
    """Check a chunk (magic, both checksums, the record chain); None when it is not intact."""
    if len(data) != CHUNK_SIZE or data[:8] != CHUNK_MAGIC:
        return None
    _, first_n, last_n, first_id, last_id, size, last_offset, free = _CHUNK_HEADER.unpack_from(data)
    data_crc, _ = struct.unpack_from("<II", data, 52)
    header_crc = struct.unpack_from("<I", data, 124)[0]
    if header_crc != zlib.crc32(data[128:512], zlib.crc32(data[:120])):
        return None
    if not RECORDS_START <= free <= CHUNK_SIZE or data_crc != zlib.crc32(data[RECORDS_START:free]):
        return None
    records = valid_records(data, free)
    if records is None or len(records) == 0 or records[-1][0] != last_offset:
        return None
    return ChunkSummary(records[0][1], records[-1][1], len(records))


def valid_records(data: bytes | bytearray, end: int) -> list[tuple[int, int]] | None:
    """(offset, record id) of the records from offset 512 up to ``end``; None when one of
    them is malformed before ``end``."""
    out: list[tuple[int, int]] = []
    at = RECORDS_START
    while at + 28 <= end:
        magic, size, record_id, _ = _RECORD_HEAD.unpack_from(data, at)
        if magic != RECORD_MAGIC or size < 28 or at + size > end:
            return None
        if struct.unpack_from("<I", data, at + size - 4)[0] != size:
            return None
        out.append((at, record_id))
        at += size
    return out if at == end else None


def salvage_chunk(number: int, data: bytes) -> Chunk | None:
    """The records of a damaged or cut-off chunk that are still whole (a crash while it was
    written), as a chunk to continue; None when not one record survives."""
    data = data[:CHUNK_SIZE].ljust(CHUNK_SIZE, b"\0")
    if data[:8] != CHUNK_MAGIC:
        return None
    at = RECORDS_START
    good: list[tuple[int, int, int]] = []  # offset, size, id
    while at + 28 <= CHUNK_SIZE:
        magic, size, record_id, _ = _RECORD_HEAD.unpack_from(data, at)
        if magic != RECORD_MAGIC or size < 28 or at + size > CHUNK_SIZE:
            break
        if struct.unpack_from("<I", data, at + size - 4)[0] != size:
            break
        if good and record_id <= good[-1][2]:
            break
        good.append((at, size, record_id))
        at += size
    if not good:
        return None
    rebuilt = bytearray(data[:at]) + bytes(CHUNK_SIZE - at)
    # Recompute the header over what survived; the tables are kept (they only point at
    # names and templates inside the surviving records, which come first).
    free = at
    struct.pack_into(
        "<QQQQIII", rebuilt, 8, good[0][2], good[-1][2], good[0][2], good[-1][2],
        CHUNK_HEADER_SIZE, good[-1][0], free,
    )  # fmt: skip
    struct.pack_into("<I", rebuilt, 52, zlib.crc32(rebuilt[RECORDS_START:free]))
    _drop_dangling_tables(rebuilt, data, free)
    struct.pack_into("<I", rebuilt, 124, zlib.crc32(rebuilt[128:512], zlib.crc32(rebuilt[:120])))
    return Chunk.load(number, bytes(rebuilt))


def _drop_dangling_tables(chunk: bytearray, original: bytes, free: int) -> None:
    """Table entries that point past the surviving records are dropped: chains run from
    newest to oldest, so the older entries they lead to are kept."""
    for base, count in ((128, 64), (384, 32)):
        for i in range(count):
            at = base + 4 * i
            offset = struct.unpack_from("<I", chunk, at)[0]
            hops = 0
            while offset >= free and hops < 4096:
                inside = offset + 4 <= CHUNK_SIZE
                offset = struct.unpack_from("<I", original, offset)[0] if inside else 0
                hops += 1
            struct.pack_into("<I", chunk, at, offset if offset < free else 0)
