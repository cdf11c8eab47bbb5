"""The VS_VERSION_INFO resource: the names and version CodeIntegrity writes into 3076/3077.

Path through the resource tree (PE/COFF specification, "The .rsrc Section"): data directory 2
-> root directory -> type RT_VERSION (16) -> its first name -> its first language -> a data
entry (RVA and size) -> VS_VERSIONINFO (Win32 "VS_VERSIONINFO structure"): a tree of blocks
``wLength, wValueLength, wType, szKey, padding, Value, padding, Children``. The fixed part
(VS_FIXEDFILEINFO, signature 0xFEEF04BD) gives the binary FileVersion; the first StringTable of
StringFileInfo gives OriginalFilename, InternalName, FileDescription and ProductName.

Every read goes through :class:`~codeintegrity.reader.Reader`; directory entries and blocks are
counted against fixed limits, so a hostile resource tree cannot loop or blow up. A damaged
resource gives None (the file's verdict never depends on it).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import MalformedImage
from ..reader import Reader
from .layout import PEImage

RT_VERSION = 16
_RESOURCE_DIRECTORY_INDEX = 2
_SUBDIRECTORY = 0x80000000
_FIXED_SIGNATURE = 0xFEEF04BD
MAX_DIRECTORY_ENTRIES = 4096  # per directory: far above any real file
MAX_BLOCKS = 4096  # version-info blocks visited in all
MAX_KEY_CHARS = 256


@dataclass(frozen=True, slots=True)
class VersionInfo:
    """What 3077 reports of a file (empty strings when the resource lacks a value)."""

    original_file_name: str = ""
    internal_name: str = ""
    file_description: str = ""
    product_name: str = ""
    file_version: str = ""  # "a.b.c.d" from VS_FIXEDFILEINFO, else the StringTable's

    def to_dict(self) -> dict[str, str]:
        return {
            "original_file_name": self.original_file_name,
            "internal_name": self.internal_name,
            "file_description": self.file_description,
            "product_name": self.product_name,
            "file_version": self.file_version,
        }


def _rva_to_offset(image: PEImage, rva: int) -> int | None:
    for section in image.sections:
        span = max(section.virtual_size, section.raw_size)
        if section.virtual_address <= rva < section.virtual_address + span:
            delta = rva - section.virtual_address
            return section.raw_offset + delta if delta < section.raw_size else None
    return None


def _resource_directory(r: Reader, image: PEImage) -> tuple[int, int] | None:
    opt = image.e_lfanew + 4 + 20
    rva_count_at = opt + (108 if image.pe32_plus else 92)
    if r.u32(rva_count_at, "NumberOfRvaAndSizes") <= _RESOURCE_DIRECTORY_INDEX:
        return None
    entry = rva_count_at + 4 + 8 * _RESOURCE_DIRECTORY_INDEX
    rva, size = r.u32(entry, "resource directory"), r.u32(entry + 4, "resource directory")
    if not rva or not size:
        return None
    offset = _rva_to_offset(image, rva)
    return None if offset is None else (offset, size)


def _entries(r: Reader, at: int) -> list[tuple[int, int]]:
    """(name or id, offset-to-data) of one IMAGE_RESOURCE_DIRECTORY at file offset ``at``."""
    named = r.u16(at + 12, "NumberOfNamedEntries")
    ids = r.u16(at + 14, "NumberOfIdEntries")
    if named + ids > MAX_DIRECTORY_ENTRIES:
        raise r.fail(at, "resource directory", f"{named + ids} entries exceed the limit")
    return [
        (r.u32(at + 16 + 8 * i, "resource entry"), r.u32(at + 20 + 8 * i, "resource entry"))
        for i in range(named + ids)
    ]


def _version_resource(r: Reader, image: PEImage) -> tuple[int, int] | None:
    """File offset and size of the first RT_VERSION resource."""
    found = _resource_directory(r, image)
    if found is None:
        return None
    root, _ = found
    target = next((data for name, data in _entries(r, root) if name == RT_VERSION), None)
    for _ in range(2):  # type -> name -> language: take the first entry at each level
        if target is None or not target & _SUBDIRECTORY:
            return None
        level = _entries(r, root + (target & ~_SUBDIRECTORY))
        target = level[0][1] if level else None
    if target is None or target & _SUBDIRECTORY:
        return None
    data_rva = r.u32(root + target, "resource data entry")
    size = r.u32(root + target + 4, "resource data entry")
    offset = _rva_to_offset(image, data_rva)
    return None if offset is None else (offset, size)


def _key(r: Reader, at: int, end: int) -> tuple[str, int]:
    """A NUL-terminated UTF-16 key at ``at``; returns it and the offset after its NUL."""
    # One bounded read and a search for the first aligned NUL unit: reading the key a unit at
    # a time was a tenth of the work on a file whose chains were already validated.
    raw = r.bytes(at, max(0, min(MAX_KEY_CHARS, (end - at) // 2)) * 2, "version-info key")
    nul = raw.find(b"\0\0")
    while nul >= 0 and nul % 2:
        nul = raw.find(b"\0\0", nul + 1)
    if nul < 0:
        raise r.fail(at, "version-info key", "not terminated within its block")
    return raw[:nul].decode("utf-16-le", "replace"), at + nul + 2


def _align4(offset: int, base: int) -> int:
    return base + (offset - base + 3) // 4 * 4


class _Walk:
    def __init__(self, r: Reader, base: int) -> None:
        self.r = r
        self.base = base  # alignment is relative to the start of the resource data
        self.blocks = 0

    def block(self, at: int, end: int) -> tuple[str, int, int, int, int]:
        """(key, value offset, value length in bytes, children offset, block end)."""
        self.blocks += 1
        if self.blocks > MAX_BLOCKS:
            raise self.r.fail(at, "version-info block", "too many blocks")
        length = self.r.u16(at, "wLength")
        value_length = self.r.u16(at + 2, "wValueLength")
        text = self.r.u16(at + 4, "wType") == 1
        block_end = at + length
        if length < 6 or block_end > end:
            raise self.r.fail(at, "wLength", f"{length} does not fit its parent")
        key, after = _key(self.r, at + 6, block_end)
        value_at = _align4(after, self.base)
        value_bytes = value_length * 2 if text else value_length
        children = _align4(value_at + value_bytes, self.base)
        return key, value_at, min(value_bytes, max(0, block_end - value_at)), children, block_end

    def children(self, at: int, end: int) -> list[tuple[str, int, int, int, int]]:
        out = []
        while at + 6 <= end:
            child = self.block(at, end)
            out.append(child)
            if child[4] <= at:
                break
            at = _align4(child[4], self.base)
        return out


def _text(r: Reader, at: int, size: int) -> str:
    raw = r.bytes(at, size, "version-info value")
    return raw.decode("utf-16-le", "replace").split("\0", 1)[0].strip()


def parse_version_info(data: bytes | bytearray | memoryview, image: PEImage) -> VersionInfo | None:
    """The file's version information, or None when it has none (or a damaged one)."""
    r = Reader(data, MalformedImage)
    try:
        found = _version_resource(r, image)
        if found is None:
            return None
        at, size = found
        end = min(at + size, len(r))
        walk = _Walk(r, at)
        key, value_at, value_size, children_at, block_end = walk.block(at, end)
        if key != "VS_VERSION_INFO":
            return None
        version = ""
        if value_size >= 52 and r.u32(value_at, "VS_FIXEDFILEINFO") == _FIXED_SIGNATURE:
            ms, ls = r.u32(value_at + 8, "dwFileVersionMS"), r.u32(value_at + 12, "dwFileVersionLS")
            version = f"{ms >> 16}.{ms & 0xFFFF}.{ls >> 16}.{ls & 0xFFFF}"
        strings: dict[str, str] = {}
        for child_key, _, _, grand_at, child_end in walk.children(children_at, block_end):
            if child_key != "StringFileInfo":
                continue
            tables = walk.children(grand_at, child_end)
            if tables:  # the first language's table
                _, _, _, entries_at, table_end = tables[0]
                for name, text_at, text_size, _, _ in walk.children(entries_at, table_end):
                    strings.setdefault(name, _text(r, text_at, text_size))
            break
    except MalformedImage:
        return None
    return VersionInfo(
        original_file_name=strings.get("OriginalFilename", ""),
        internal_name=strings.get("InternalName", ""),
        file_description=strings.get("FileDescription", ""),
        product_name=strings.get("ProductName", ""),
        file_version=version or strings.get("FileVersion", ""),
    )
