"""A minimal Windows registry hive (regf) writer for test fixtures.

Writes one hbin with nk (keys), vk (values), lf (subkey lists) and value-list cells: enough for
a SYSTEM hive with Services and ComputerName. Independent readers check what it writes
(hivexget from Debian's libhivex-bin in the tests, dissect.regf in the product).
Layout per "Windows registry file format specification" (msuhanov/regf): base block of 4096
bytes with an XOR checksum over its first 508 bytes, hbins of 4096-byte multiples, cells with a
negative (allocated) i32 size, 8-byte aligned.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

REG_SZ = 1
REG_EXPAND_SZ = 2
REG_BINARY = 3
REG_DWORD = 4
_NONE = 0xFFFFFFFF
_FILETIME = 133_000_000_000_000_000  # 2022-06-21, a fixed time so builds are reproducible


@dataclass
class Key:
    name: str
    values: list[tuple[str, int, bytes]] = field(default_factory=list)
    children: dict[str, Key] = field(default_factory=dict)

    def key(self, path: str) -> Key:
        """The subkey at ``path`` (backslash-separated), created on the way."""
        node = self
        for part in (p for p in path.split("\\") if p):
            found = node.children.get(part.upper())
            if found is None:
                found = node.children[part.upper()] = Key(part)
            node = found
        return node

    def set_sz(self, name: str, text: str, kind: int = REG_SZ) -> Key:
        self.values.append((name, kind, (text + "\0").encode("utf-16-le")))
        return self

    def set_dword(self, name: str, number: int) -> Key:
        self.values.append((name, REG_DWORD, struct.pack("<I", number)))
        return self


class _Cells:
    def __init__(self) -> None:
        self.data = bytearray()

    def alloc(self, payload: bytes) -> int:
        """Append a cell; returns its offset relative to the first hbin (0x1000 in the file)."""
        size = (4 + len(payload) + 7) & ~7
        offset = 32 + len(self.data)  # after the hbin header
        self.data += struct.pack("<i", -size) + payload + b"\0" * (size - 4 - len(payload))
        return offset

    def patch_u32(self, cell_offset: int, field_offset: int, value: int) -> None:
        at = cell_offset - 32 + 4 + field_offset
        self.data[at : at + 4] = struct.pack("<I", value)


def _write_key(cells: _Cells, key: Key, parent: int, root: bool) -> int:
    name = key.name.encode("ascii")
    nk = bytearray(76 + len(name))
    struct.pack_into("<2sHQ", nk, 0, b"nk", 0x20 | (0x0C if root else 0), _FILETIME)
    struct.pack_into("<I", nk, 16, parent)
    struct.pack_into("<II", nk, 20, len(key.children), 0)
    struct.pack_into("<II", nk, 28, _NONE, _NONE)
    struct.pack_into("<II", nk, 36, len(key.values), _NONE)
    struct.pack_into("<II", nk, 44, _NONE, _NONE)  # security, class
    max_name = max((len(c.name) * 2 for c in key.children.values()), default=0)
    max_value_name = max((len(v[0]) * 2 for v in key.values), default=0)
    max_value_data = max((len(v[2]) for v in key.values), default=0)
    struct.pack_into("<IIIII", nk, 52, max_name, 0, max_value_name, max_value_data, 0)
    struct.pack_into("<HH", nk, 72, len(name), 0)
    nk[76:] = name
    me = cells.alloc(bytes(nk))
    if key.values:
        offsets = [_write_value(cells, *value) for value in key.values]
        listing = cells.alloc(struct.pack(f"<{len(offsets)}I", *offsets))
        cells.patch_u32(me, 40, listing)
    if key.children:
        # Windows binary-searches subkeys by upper-cased name: keep them sorted.
        children = sorted(key.children.values(), key=lambda k: k.name.upper())
        entries = []
        for child in children:
            offset = _write_key(cells, child, me, False)
            hint = child.name.encode("ascii")[:4].ljust(4, b"\0")
            entries.append(struct.pack("<I4s", offset, hint))
        lf = cells.alloc(b"lf" + struct.pack("<H", len(entries)) + b"".join(entries))
        cells.patch_u32(me, 28, lf)
    return me


def _write_value(cells: _Cells, name: str, kind: int, data: bytes) -> int:
    raw_name = name.encode("ascii")
    if len(data) <= 4:
        size, where = len(data) | 0x80000000, int.from_bytes(data.ljust(4, b"\0"), "little")
    else:
        size, where = len(data), cells.alloc(data)
    flags = 1 if raw_name else 0
    return cells.alloc(
        struct.pack("<2sHIIIHH", b"vk", len(raw_name), size, where, kind, flags, 0) + raw_name
    )


def build_hive(root: Key, name: str = "SYSTEM") -> bytes:
    """The hive file bytes for the tree under ``root``."""
    cells = _Cells()
    root_offset = _write_key(cells, root, _NONE, True)
    body = bytes(cells.data)
    bin_size = (32 + len(body) + 4095) // 4096 * 4096
    free = bin_size - 32 - len(body)
    tail = struct.pack("<i", free) + b"\0" * (free - 4) if free else b""
    hbin = struct.pack("<4sIIQQI", b"hbin", 0, bin_size, 0, _FILETIME, 0) + body + tail
    base = bytearray(4096)
    struct.pack_into("<4sIIQIIII", base, 0, b"regf", 1, 1, _FILETIME, 1, 5, 0, 1)
    struct.pack_into("<III", base, 36, root_offset, bin_size, 1)
    encoded = name.encode("utf-16-le")[:64]
    base[48 : 48 + len(encoded)] = encoded
    checksum = 0
    for (word,) in struct.iter_unpack("<I", bytes(base[:508])):
        checksum ^= word
    checksum = {0: 1, 0xFFFFFFFF: 0xFFFFFFFE}.get(checksum, checksum)
    struct.pack_into("<I", base, 508, checksum)
    return bytes(base) + hbin
