"""Random-access sources of a file's bytes: the I/O edge the engine judges a file from when it
is not handed the whole file as one buffer (a file inside a disk image, read through dissect's
file object).

A :class:`ByteSource` is a size and ``read(offset, length)``. The engine asks it for two kinds
of reads, each bounded whatever the file size:
- the parsers' slices (headers and section table, the certificate table, the resource data the
  version information is read from), through a :class:`DemandImage`: a buffer of the file's
  size whose blocks are read from the source the first time a parser's :class:`Reader` touches
  them, so parsers keep taking plain bytes and read exactly what they read from a whole file;
- the hashing pass, chunk by chunk (:func:`codeintegrity.pe.hashing.compute_hashes_streamed`).
"""

from __future__ import annotations

import mmap
import os
import sys
from typing import IO, Protocol

from ..reader import DemandBuffer

# Blocks a DemandImage reads at a time: the headers, a section table and the COFF string table
# of a real file each take one read; small enough that a parser's scattered reads stay cheap.
DEMAND_BLOCK = 64 * 1024
# Linux MAP_NORESERVE (the constant is missing from Python's mmap module before 3.13): the
# mapping is sized to the file but only the blocks read are ever touched.
_MAP_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000 if sys.platform == "linux" else 0)


class ByteSource(Protocol):
    """A file's bytes by offset. ``read`` returns ``length`` bytes, fewer only at end of file,
    and raises ``OSError`` when the underlying storage fails."""

    @property
    def size(self) -> int: ...

    def read(self, offset: int, length: int) -> bytes | bytearray | memoryview: ...


def read_exact(source: ByteSource, offset: int, length: int) -> bytes | bytearray | memoryview:
    """``length`` bytes of ``source`` at ``offset`` (fewer only past the end of the file);
    ``OSError`` when the source gives fewer: a file that ends early is never judged as if what
    was read were all of it."""
    length = max(0, min(length, source.size - offset))
    data = source.read(offset, length)
    if len(data) != length:
        raise OSError(0, f"short read at {offset:#x}: {len(data)} of {length} bytes")
    return data


class BufferSource:
    """A source over a buffer already in memory (slices are views, not copies)."""

    __slots__ = ("_view",)

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        view = data if isinstance(data, memoryview) else memoryview(data)
        self._view = view.cast("B") if view.ndim != 1 or view.itemsize != 1 else view

    @property
    def size(self) -> int:
        return len(self._view)

    def read(self, offset: int, length: int) -> memoryview:
        return self._view[offset : offset + length]


class FileObjectSource:
    """A source over a seekable binary file object (dissect's file objects, ``open(..., "rb")``).

    ``size`` is what the file system says; a read that ends early inside it raises ``OSError``
    (a truncated image or a damaged run list must never be judged as if it were the file).
    """

    __slots__ = ("_handle", "_size")

    def __init__(self, handle: IO[bytes], size: int) -> None:
        self._handle = handle
        self._size = size

    @property
    def size(self) -> int:
        return self._size

    def read(self, offset: int, length: int) -> bytes | bytearray:
        length = max(0, min(length, self._size - offset))
        self._handle.seek(offset)
        data = self._handle.read(length)
        if len(data) < length:
            buf = bytearray(data)
            while len(buf) < length:
                more = self._handle.read(length - len(buf))
                if not more:
                    raise OSError(0, f"short read: {offset + len(buf)} of {self._size} bytes")
                buf += more
            return buf
        return data


class FileDescriptorSource:
    """A source over an open file descriptor (``os.pread``: no seek, no shared position)."""

    __slots__ = ("_fd", "_size")

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._size = os.fstat(fd).st_size

    @property
    def size(self) -> int:
        return self._size

    def read(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, self._size - offset))
        data = os.pread(self._fd, length, offset)
        while len(data) < length:
            more = os.pread(self._fd, length - len(data), offset + len(data))
            if not more:
                raise OSError(0, f"short read: {offset + len(data)} of {self._size} bytes")
            data += more
        return data


class DemandImage(DemandBuffer):
    """The file of ``source`` as one buffer whose blocks are read on first use.

    Create with :meth:`over`; ``filled`` counts the bytes read into it (the parsers' slices).
    Close it (or use it as a context manager) when the file is judged.
    """

    source: ByteSource
    block: int
    filled: int
    _present: set[int]

    @classmethod
    def over(cls, source: ByteSource) -> DemandImage:
        if source.size <= 0:
            raise ValueError("an empty file has no image to map")
        if hasattr(mmap, "MAP_PRIVATE"):
            flags = mmap.MAP_PRIVATE | _MAP_NORESERVE
            image = cls(-1, source.size, flags=flags, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        else:  # Windows: an anonymous mapping is committed page by page as it is written
            image = cls(-1, source.size)
        image.source = source
        image.block = DEMAND_BLOCK  # (read at call time: tests make it smaller)
        image.filled = 0
        image._present = set()
        return image

    def ensure(self, offset: int, length: int) -> None:
        """Read every block of [offset, offset + length) not read yet."""
        if length <= 0:
            return
        block = self.block
        first, last = offset // block, (offset + length - 1) // block
        present = self._present
        if first == last and first in present:
            return  # the common case: a header field in a block already read
        k = first
        while k <= last:
            if k in present:
                k += 1
                continue
            run = k  # read a run of missing blocks at once
            while run + 1 <= last and run + 1 not in present:
                run += 1
            start = k * block
            end = min((run + 1) * block, self.source.size)
            self[start:end] = read_exact(self.source, start, end - start)
            self.filled += end - start
            present.update(range(k, run + 1))
            k = run + 1
