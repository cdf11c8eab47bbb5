"""Page-hash tables (SpcPeImagePageHashes V1/V2): parse, validate and compare.

The table is a flat array of ``{u32le file offset; digest}`` entries ending with a terminator
whose digest is all zero (authenticode.md 2.2). The terminator's offset is only used to bound
the last page: generators disagree about its exact value (end of raw data vs. last page + 4 KiB).

Tables are large (a 200 MiB image has 51,230 entries, 1.8 MB), so the digests are not split
into one ``bytes`` object per entry: :class:`PackedDigests` reads them in place from the raw
table, and the computed digests travel the same way. The common case, every page matching, is
decided by a handful of C-level comparisons; only a mismatch walks the entries in Python.
"""

from __future__ import annotations

import sys
from array import array
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from operator import lt
from typing import overload

from ..findings import Finding, FindingCode
from ..limits import DEFAULT_LIMITS, Limits
from .layout import PEImage, Section

PAGE_HASH_DIGEST_SIZES = {"sha1": 20, "sha256": 32}


class PackedDigests(Sequence[bytes]):
    """``count`` digests of ``size`` bytes, ``stride`` bytes apart from ``start`` in ``buffer``.

    A read-only sequence of ``bytes`` (equal to a tuple or list with the same digests) that
    keeps one buffer instead of one object per digest.
    """

    __slots__ = ("_buffer", "_start", "_size", "_stride", "_count")

    def __init__(
        self, buffer: bytes, size: int, *, start: int = 0, stride: int = 0, count: int = -1
    ) -> None:
        stride = stride or size
        if size <= 0 or start < 0 or stride < size:
            raise ValueError(f"bad digest layout: size {size}, start {start}, stride {stride}")
        if count < 0:
            count = max(0, (len(buffer) - start - size) // stride + 1)
        if count and start + (count - 1) * stride + size > len(buffer):
            raise ValueError(f"{count} digests of {size} bytes do not fit the buffer")
        self._buffer = buffer
        self._start = start
        self._size = size
        self._stride = stride
        self._count = count

    @property
    def digest_size(self) -> int:
        return self._size

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, index: int) -> bytes: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[bytes, ...]: ...
    def __getitem__(self, index: int | slice) -> bytes | tuple[bytes, ...]:
        if isinstance(index, slice):
            return tuple(self._at(i) for i in range(*index.indices(self._count)))
        if index < 0:
            index += self._count
        if not 0 <= index < self._count:
            raise IndexError("digest index out of range")
        return self._at(index)

    def _at(self, index: int) -> bytes:
        pos = self._start + index * self._stride
        return self._buffer[pos : pos + self._size]

    def __iter__(self) -> Iterator[bytes]:
        buffer, size = self._buffer, self._size
        for pos in range(self._start, self._start + self._count * self._stride, self._stride):
            yield buffer[pos : pos + size]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PackedDigests):
            if (self._count, self._size) != (other._count, other._size):
                return False
            same = self._same_words(other)
            return same if same is not None else tuple(self) == tuple(other)
        if isinstance(other, tuple | list):
            return len(other) == self._count and tuple(self) == tuple(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # equal to tuples, so not hashable

    def __repr__(self) -> str:
        return f"PackedDigests({self._count} x {self._size} bytes)"

    def _words(self) -> list[memoryview] | None:
        """One strided 32-bit view per word of the digests (column k = word k of each digest),
        or None when the layout is not word-aligned."""
        if (self._start | self._size | self._stride) % 4 or len(self._buffer) % 4:
            return None
        words = memoryview(self._buffer).cast("I")
        first, step = self._start // 4, self._stride // 4
        stop = first + self._count * step
        return [words[first + k : stop : step] for k in range(self._size // 4)]

    def _same_words(self, other: PackedDigests) -> bool | None:
        """Equality decided by comparing word columns in C; None when a layout does not allow
        it. Native word order is the same on both sides, so equal words mean equal bytes."""
        mine, theirs = self._words(), other._words()
        if mine is None or theirs is None:
            return None
        return all(a == b for a, b in zip(mine, theirs, strict=True))


@dataclass(frozen=True, slots=True)
class PageHashTable:
    """A validated table. ``offsets``/``digests`` exclude the terminator; ``end`` is its offset.

    ``digests`` is a :class:`PackedDigests` over the raw table for parsed tables; hand-made
    tables may pass any sequence of ``bytes``.
    """

    algorithm: str  # "sha1" | "sha256"
    offsets: tuple[int, ...]
    digests: Sequence[bytes]
    end: int

    def __len__(self) -> int:
        return len(self.offsets)


def _entry_offsets(raw: bytes, entry_size: int) -> list[int]:
    """The u32le offset of every entry, read in C (entries are a whole number of words)."""
    words = memoryview(raw).cast("I")[:: entry_size // 4]
    if sys.byteorder == "little":
        return words.tolist()
    swapped = array("I", words.tobytes())  # big-endian host: the table is little-endian
    swapped.byteswap()
    return swapped.tolist()


def parse_page_hash_table(
    raw: bytes | bytearray | memoryview,
    algorithm: str,
    image: PEImage,
    limits: Limits = DEFAULT_LIMITS,
    signature: int = 0,
) -> tuple[PageHashTable | None, list[Finding]]:
    """Validate a raw table; returns (table or None when unusable, findings)."""
    findings: list[Finding] = []

    def malformed(detail: str, page: int | None = None, offset: int | None = None) -> None:
        findings.append(
            Finding(
                FindingCode.PAGE_HASH_TABLE_MALFORMED,
                detail,
                signature=signature,
                page=page,
                offset=offset,
            )
        )

    digest_size = PAGE_HASH_DIGEST_SIZES.get(algorithm)
    if digest_size is None:
        malformed(f"unsupported page-hash algorithm {algorithm!r}")
        return None, findings
    raw = bytes(raw)  # no copy when it already is bytes
    entry_size = 4 + digest_size
    if len(raw) % entry_size:
        malformed(f"table size {len(raw)} is not a multiple of the {entry_size}-byte entry")
        return None, findings
    count = len(raw) // entry_size
    if count < 2:
        malformed(f"{count} entries: a table needs the header page and a terminator")
        return None, findings
    if count > limits.max_page_hash_entries:
        malformed(f"{count} entries exceed the limit {limits.max_page_hash_entries}")
        return None, findings

    offsets = _entry_offsets(raw, entry_size)
    usable = True
    if offsets[0] != 0:
        malformed(f"first entry is at {offsets[0]:#x}, not at the headers (0)", 0, offsets[0])
        usable = False
    # Both checks report the first offending entry; the vectorised test decides the common case.
    increasing = all(map(lt, offsets, islice(offsets, 1, None)))
    if not increasing:
        i = next(i for i in range(1, count) if offsets[i] <= offsets[i - 1])
        malformed(
            f"entry {i} offset {offsets[i]:#x} does not follow {offsets[i - 1]:#x}", i, offsets[i]
        )
        usable = False
    hashed_end = image.hash_end
    pages = offsets[:-1]  # the terminator only bounds the last page
    if (pages[-1] if increasing else max(pages)) >= hashed_end:
        if increasing:
            i = bisect_left(pages, hashed_end)
        else:
            i = next(i for i, off in enumerate(pages) if off >= hashed_end)
        malformed(
            f"entry {i} offset {offsets[i]:#x} is at or past the hashed end {hashed_end:#x}",
            i,
            offsets[i],
        )
        usable = False
    terminator = (count - 1) * entry_size + 4
    if any(raw[terminator : terminator + digest_size]):
        # Still usable: every page digest is present; only the terminator is wrong.
        malformed("terminator digest is not all zero", count - 1, offsets[-1])
    if not usable:
        return None, findings
    table = PageHashTable(
        algorithm=algorithm,
        offsets=tuple(pages),
        digests=PackedDigests(raw, digest_size, start=4, stride=entry_size, count=count - 1),
        end=offsets[-1],
    )
    return table, findings


def digests_equal(expected: Sequence[bytes], computed: Sequence[bytes]) -> bool:
    """Whether two digest sequences are equal, in C when both are packed."""
    if isinstance(expected, PackedDigests) and isinstance(computed, PackedDigests):
        return expected == computed
    return len(expected) == len(computed) and tuple(expected) == tuple(computed)


def compare_page_hashes(
    table: PageHashTable,
    computed: Sequence[bytes],
    signature: int = 0,
    sections: Sequence[Section] | PEImage = (),
) -> list[Finding]:
    """One PAGE_HASH_MISMATCH per page whose computed digest differs from the table's."""
    if isinstance(sections, PEImage):
        sections = sections.sections
    findings: list[Finding] = []
    if len(computed) != len(table.digests):
        findings.append(
            Finding(
                FindingCode.PAGE_HASH_TABLE_MALFORMED,
                f"{len(computed)} computed page digests for {len(table.digests)} table entries",
                signature=signature,
            )
        )
    elif digests_equal(table.digests, computed):
        return findings  # the common case, decided without a Python loop over the pages
    for index, (offset, expected, actual) in enumerate(
        zip(table.offsets, table.digests, computed, strict=False)
    ):
        if expected != actual:
            findings.append(
                Finding(
                    FindingCode.PAGE_HASH_MISMATCH,
                    f"page {index} at {offset:#x}: {table.algorithm} digest differs",
                    signature=signature,
                    offset=offset,
                    page=index,
                    section=_section_name(sections, offset),
                )
            )
    return findings


def _section_name(sections: Sequence[Section], offset: int) -> str | None:
    """The section whose raw data holds ``offset``; None for the headers or the overlay."""
    found = next((s for s in sections if s.raw_size and s.raw_offset <= offset < s.raw_end), None)
    return found.name if found else None
