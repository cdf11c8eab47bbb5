"""One bounds-checked reader over untrusted bytes.

Every parser reads through :class:`Reader`, so no ``struct.error`` or ``IndexError`` can escape:
a read past the end raises the caller's :class:`MalformedError` subclass naming the offset and the
field that was being read.
"""

from __future__ import annotations

import mmap
import struct

from .errors import MalformedError

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


class DemandBuffer(mmap.mmap):
    """A file's bytes filled in on demand, like a file mapping whose pages the kernel reads on
    first touch: an anonymous private mapping of the file's size (untouched pages cost no
    memory) that a :class:`Reader` asks to ``ensure`` each range before reading it. Parsers
    keep taking a plain buffer; the subclass (:mod:`codeintegrity.pe.source`) is the I/O edge.
    Only views that start at offset 0 of the buffer are recognised (prefix slices keep their
    offsets; no parser slices from elsewhere before reading through a Reader)."""

    def ensure(self, offset: int, length: int) -> None:
        raise NotImplementedError


class Reader:
    """Little-endian reads at absolute offsets of a ``bytes``/``memoryview`` buffer."""

    __slots__ = ("_view", "_len", "_error", "_demand")

    def __init__(
        self, data: bytes | bytearray | memoryview, error: type[MalformedError] = MalformedError
    ) -> None:
        self._view = data if isinstance(data, memoryview) else memoryview(data)
        if self._view.ndim != 1 or self._view.itemsize != 1:
            self._view = self._view.cast("B")
        self._len = len(self._view)
        self._error = error
        holder = self._view.obj
        self._demand = holder if isinstance(holder, DemandBuffer) else None

    def __len__(self) -> int:
        return self._len

    @property
    def view(self) -> memoryview:
        return self._view

    def fail(self, offset: int | None, field: str, reason: str) -> MalformedError:
        """Build (not raise) this reader's error type, for checks done by the caller."""
        return self._error(offset, field, reason)

    def require(self, offset: int, length: int, field: str) -> None:
        if offset < 0 or length < 0 or offset + length > self._len:
            raise self._error(
                offset,
                field,
                f"needs {length} bytes but the data ends at {self._len:#x}",
            )
        if self._demand is not None:
            self._demand.ensure(offset, length)

    def u8(self, offset: int, field: str) -> int:
        self.require(offset, 1, field)
        return self._view[offset]

    def u16(self, offset: int, field: str) -> int:
        self.require(offset, 2, field)
        return _U16.unpack_from(self._view, offset)[0]

    def u32(self, offset: int, field: str) -> int:
        self.require(offset, 4, field)
        return _U32.unpack_from(self._view, offset)[0]

    def u64(self, offset: int, field: str) -> int:
        self.require(offset, 8, field)
        return _U64.unpack_from(self._view, offset)[0]

    def slice(self, offset: int, length: int, field: str) -> memoryview:
        self.require(offset, length, field)
        return self._view[offset : offset + length]

    def bytes(self, offset: int, length: int, field: str) -> bytes:
        return bytes(self.slice(offset, length, field))
