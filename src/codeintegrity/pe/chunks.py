"""Where the hashing pass (:mod:`codeintegrity.pe.hashing`) gets its chunks: views of a buffer
holding the whole file, or chunks read from a :class:`~codeintegrity.pe.source.ByteSource`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .source import ByteSource

# (buffer, base, lo, hi): file bytes [lo, hi) to feed, held in buffer from file offset base on.
Part = tuple[memoryview, int, int, int]
# (offset, length) -> (buffer, base): a buffer holding at least that range of the file.
Window = Callable[[int, int], tuple[memoryview, int]]
# Bytes read past each streamed chunk: a page (at most 8 KiB) that starts in a chunk may end in
# the next.
LOOKAHEAD = 8192


class Whole:
    """Chunks of a buffer holding the whole file: views, no copies."""

    def __init__(self, view: memoryview) -> None:
        self.view = view
        self.size = len(view)

    def parts(self, lo: int, hi: int) -> list[Part]:
        return [(self.view, 0, lo, hi)]

    def window(self, offset: int, length: int) -> tuple[memoryview, int]:
        return self.view, 0

    def drop_before(self, offset: int) -> None:
        pass


class Streamed:
    """Chunks read from a source, each once, each with one page of look-ahead; the caller
    drops those it is done with, so at most two (the caller's and the workers') are held."""

    def __init__(self, source: ByteSource, chunk: int) -> None:
        self.source = source
        self.size = source.size
        self.chunk = chunk
        self.held: dict[int, memoryview] = {}

    def _read(self, offset: int, length: int) -> memoryview:
        from .source import read_exact

        data = read_exact(self.source, offset, length)
        return data if isinstance(data, memoryview) else memoryview(data)

    def _get(self, k: int) -> memoryview:
        view = self.held.get(k)
        if view is None:
            view = self.held[k] = self._read(k * self.chunk, self.chunk + LOOKAHEAD)
        return view

    def parts(self, lo: int, hi: int) -> list[Part]:
        c = self.chunk
        return [
            (self._get(k), k * c, max(lo, k * c), min(hi, (k + 1) * c))
            for k in range(lo // c, -(-hi // c))
        ]

    def window(self, offset: int, length: int) -> tuple[memoryview, int]:
        return self._read(offset, length), offset

    def drop_before(self, offset: int) -> None:
        for k in [k for k in self.held if (k + 1) * self.chunk <= offset]:
            del self.held[k]
