"""Every digest the engine needs, in one pass over the image bytes.

Forms (authenticode.md 1.3, 1.4, 2.4, 2.6):
- image: the linear form Windows uses, [0, CheckSum) + [CheckSum+4, certdir) + [certdir+8, end)
  where end is the certificate table start (clamped to EOF), else EOF; with no certificate table
  and end % 8 != 0 it is zero-padded to a multiple of 8 (``image``), ``image_unpadded`` without.
- efi_spec: the UEFI/edk2 section-sorted form (headers, sections by PointerToRawData, extra data).
- pages: one digest per page-hash table entry; the page's bytes minus the excluded header fields,
  zero-padded by the raw span: H(data || zeros(page_size - span)).
- first_page: WDAC "Hash Page", the header page only, padded the same way to 4096.
- flat: every byte of the file.

The file is walked in chunks: memoryview slices of a buffer holding the whole file (no copies),
or, from a :class:`~codeintegrity.pe.source.ByteSource`, chunks read one at a time
(:func:`compute_hashes_streamed`: at most two chunks, each with one page of look-ahead, are held
at once, whatever the file size). Each digest stream is a "feed" that
takes the part of a chunk it covers. hashlib releases the GIL for updates of 2 KiB or more, so when
several feeds are needed they are split into bins: the caller's thread runs one, a worker the
other, chunk by chunk (each feed's updates stay in file order). The worker runs one chunk ahead,
so it takes the page faults of a mapped file; one feed runs inline with no thread at all.

Page-hash digests all stay on the caller's thread: each is a separate 4 KiB hash, and a thread
doing that drops and retakes the GIL on every page. Two such threads trade the GIL on every page
(51,230 pages on two threads: 1.2x the time of one), and a worker that needs the GIL while the
caller hashes pages loses the race for it until the caller blocks, hence the hand-shake in
:func:`.hashpass._start`. The page digests go into one packed buffer (no object per digest is kept).
Measured on a 202 MiB file with 51,230 SHA-256 page hashes (2 cores, SHA-NI, idle machine):
~2.8 us per page on the caller (2.3 us of hashing, ~0.5 us of call overhead), so image SHA-256 +
page hashes is bounded by the page thread: about 1.2x one mapped hashlib SHA-256 pass.

A table entry whose page has no bytes before the hashed end (only hand-made tables; the parser
rejects them) hashes as a page of zeros.
"""

from __future__ import annotations

import hashlib
import mmap
from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import sub
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, MalformedImage
from ..limits import DEFAULT_LIMITS, Limits
from .chunks import Streamed, Whole, Window
from .hashpass import run_pass
from .layout import PEImage
from .pagehash import PackedDigests, PageHashTable

if TYPE_CHECKING:
    from .source import ByteSource

SUPPORTED_ALGORITHMS = frozenset({"md5", "sha1", "sha256", "sha384", "sha512"})
CHUNK_SIZE = 2 << 20  # fits in L2/L3 while both threads read it
# Chunks read from a ByteSource: the memory a streamed file costs is about twice this.
STREAM_CHUNK_SIZE = CHUNK_SIZE
FIRST_PAGE_SIZE = 4096
_ZEROS = bytes(8192)  # the largest page size

# Relative cost per byte, to balance the two bins (measured with SHA-NI: SHA-256 ~1.7 GB/s).
_COST = {"md5": 2.3, "sha1": 0.93, "sha256": 1.0, "sha384": 2.1, "sha512": 2.1}

Range = tuple[int, int]
Release = Callable[[int, int], None]  # (offset, length) of a chunk every feed is done with
_Hasher = Any  # hashlib's hash object type is private


@dataclass(frozen=True, slots=True)
class HashRequest:
    """Which digests to compute; algorithm names are hashlib names."""

    image: frozenset[str]
    page_tables: tuple[PageHashTable, ...] = ()
    efi_spec_form: frozenset[str] = frozenset()
    first_page: frozenset[str] = frozenset()
    flat: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class HashResult:
    """Digests by hashlib name; ``pages`` holds one digest per table entry (no terminator)."""

    image: Mapping[str, bytes]
    image_unpadded: Mapping[str, bytes]
    efi_spec: Mapping[str, bytes] = field(default_factory=dict)
    # One sequence of digests (PackedDigests) per request.page_tables entry.
    pages: tuple[Sequence[bytes], ...] = ()
    first_page: Mapping[str, bytes] = field(default_factory=dict)
    flat: Mapping[str, bytes] = field(default_factory=dict)


def _constructor(name: str) -> Callable[..., _Hasher]:
    if name not in SUPPORTED_ALGORITHMS:
        raise ConfigError(f"unsupported digest algorithm {name!r}")
    ctor: Callable[..., _Hasher] = getattr(hashlib, name)
    return ctor


def _byte_view(data: bytes | bytearray | memoryview) -> memoryview:
    view = data if isinstance(data, memoryview) else memoryview(data)
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    return view


def _subtract(start: int, end: int, holes: Sequence[Range]) -> list[Range]:
    """[start, end) minus sorted ``holes``, as sorted non-empty ranges."""
    out: list[Range] = []
    pos = start
    for a, b in holes:
        if b <= pos or a >= end:
            continue
        if a > pos:
            out.append((pos, a))
        pos = max(pos, b)
    if end > pos:
        out.append((pos, end))
    return out


def linear_ranges(image: PEImage) -> list[Range]:
    """The byte ranges of the linear (Windows) image hash, in order."""
    return _subtract(0, image.hash_end, image.excluded_ranges)


def efi_spec_ranges(image: PEImage) -> list[Range]:
    """The documented (Authenticode_PE.docx / edk2) section-sorted form. May revisit bytes."""
    size = image.size
    ranges = _subtract(0, min(image.size_of_headers, size), image.excluded_ranges)
    hashed = image.size_of_headers
    for section in sorted((s for s in image.sections if s.raw_size), key=lambda s: s.raw_offset):
        a, b = min(section.raw_offset, size), min(section.raw_end, size)
        if b > a:
            ranges.append((a, b))
        hashed += section.raw_size
    if size > hashed:
        # Steps 14-15: the extra data starts at SUM_OF_BYTES_HASHED, whatever the layout.
        cert_size = image.cert_table_size if image.has_cert_table else 0
        extra_end = min(size - cert_size, size)
        if extra_end > hashed:
            ranges.append((hashed, extra_end))
    return ranges


def _is_monotonic(ranges: Sequence[Range]) -> bool:
    return all(ranges[i][1] <= ranges[i + 1][0] for i in range(len(ranges) - 1))


def _padded_digest(
    ctor: Callable[..., _Hasher],
    view: memoryview,
    off: int,
    span: int,
    page: int,
    holes: Sequence[Range],
    base: int = 0,
) -> bytes:
    """H(bytes [off, off+span) minus ``holes`` || zeros(page - span)); ``view`` holds the
    file from offset ``base``."""
    h = ctor()
    for a, b in _subtract(off, off + span, holes):
        h.update(view[a - base : b - base])
    h.update(_ZEROS[: page - span])
    return bytes(h.digest())


class _RangeFeed:
    """One hasher fed the parts of a sorted, non-overlapping range list chunk by chunk."""

    __slots__ = ("hasher", "ranges", "next", "cost")

    def __init__(self, algorithm: str, ranges: list[Range]) -> None:
        self.hasher = _constructor(algorithm)()
        self.ranges = ranges
        self.next = 0
        self.cost = _COST[algorithm] * sum(b - a for a, b in ranges)

    def feed(self, view: memoryview, base: int, lo: int, hi: int) -> None:
        ranges, i, update = self.ranges, self.next, self.hasher.update
        while i < len(ranges):
            a, b = ranges[i]
            if a >= hi:
                break
            s, e = max(a, lo), min(b, hi)
            if e > s:
                update(view[s - base : e - base])
            if b > hi:
                break
            i += 1
        self.next = i


class _PageFeed:
    """Digests of the page-hash table entries whose offsets fall in each chunk, packed into
    one buffer in table order (no object per digest is kept).

    The per-page Python work is one list comprehension per chunk with a cheap test for the
    common case (a full page clear of the excluded header fields); short pages, header pages
    and hand-made oddities take the slow path.
    """

    __slots__ = (
        "algorithm",
        "ctor",
        "size",
        "offsets",
        "bounds",
        "page",
        "end",
        "holes",
        "out",
        "next",
        "in_order",
    )

    def __init__(self, table: PageHashTable, image: PEImage) -> None:
        self.algorithm = table.algorithm
        self.ctor = _constructor(table.algorithm)
        self.size: int = self.ctor().digest_size
        self.offsets = table.offsets
        self.bounds = (*table.offsets[1:], table.end)  # each page ends by the next entry
        self.page = image.page_size
        self.end = image.hash_end
        self.holes = image.excluded_ranges
        self.out = bytearray(self.size * len(table.offsets))
        self.next = 0
        # A hand-made table may be out of order; then every page is hashed at the end.
        self.in_order = list(table.offsets) == sorted(table.offsets)

    @property
    def cost(self) -> float:
        # Measured: per-page call overhead adds about a fifth to the hashing itself.
        return _COST[self.algorithm] * self.page * 1.2 * len(self.offsets)

    def feed(self, view: memoryview, base: int, lo: int, hi: int) -> None:
        """Hash the not yet hashed entries that start before ``hi`` into ``out``; ``view``
        holds the file from ``base`` to at least one page past ``hi`` (or to the end)."""
        i = self.next
        if not self.in_order:
            return  # hashed by finish(), entry by entry
        j = bisect_left(self.offsets, hi, i)
        if j <= i:
            return
        ctor, page, slow = self.ctor, self.page, self._slow
        first = self.holes[-1][1]  # a full page starting here or later holds no excluded field
        last = self.end - page  # and one starting after this runs past the hashed end
        offsets, bounds = self.offsets[i:j], self.bounds[i:j]
        if offsets[0] >= first and offsets[-1] <= last and min(map(sub, bounds, offsets)) >= page:
            # Every page of the chunk is a full page clear of the header fields (the usual
            # case): no per-page test.
            if base:
                digests = [ctor(view[off - base : off - base + page]).digest() for off in offsets]
            else:
                digests = [ctor(view[off : off + page]).digest() for off in offsets]
        else:
            digests = [
                ctor(view[off - base : off - base + page]).digest()
                if first <= off <= last and bound - off >= page
                else slow(view, base, off, bound)
                for off, bound in zip(offsets, bounds, strict=True)
            ]
        self.out[i * self.size : j * self.size] = b"".join(digests)
        self.next = j

    def finish(self, window: Window) -> None:
        """Hash every entry no chunk covered: all of a hand-made out-of-order table, and
        entries at or past EOF (hand-made tables only), each from its own window."""
        for k in range(self.next, len(self.offsets)):
            off = self.offsets[k]
            view, base = window(off, self._span(off, self.bounds[k]))
            digest = self._slow(view, base, off, self.bounds[k])
            self.out[k * self.size : (k + 1) * self.size] = digest
        self.next = len(self.offsets)

    def _span(self, off: int, bound: int) -> int:
        return max(0, min(self.page, bound - off, self.end - off))

    def _slow(self, view: memoryview, base: int, off: int, bound: int) -> bytes:
        """H(page bytes minus excluded fields || zeros(page - span)). A span of 0 only comes
        from a hand-made table (the parser rejects offsets past the hashed end): such a page
        hashes as a page of zeros."""
        span = self._span(off, bound)
        return _padded_digest(self.ctor, view, off, span, self.page, self.holes, base)

    def result(self) -> PackedDigests:
        return PackedDigests(bytes(self.out), self.size)


_Feed = _RangeFeed | _PageFeed


def first_page_digest(view: memoryview, image: PEImage, algorithm: str) -> bytes:
    """WDAC "Hash Page": [0, min(SizeOfHeaders, 4096)) minus the excluded fields, padded.
    ``view`` holds the file from offset 0, at least that span of it."""
    span = min(image.size_of_headers, FIRST_PAGE_SIZE, image.size)
    return _padded_digest(
        _constructor(algorithm), view, 0, span, FIRST_PAGE_SIZE, image.excluded_ranges
    )


def compute_hashes(
    data: bytes | bytearray | memoryview,
    image: PEImage,
    request: HashRequest,
    limits: Limits = DEFAULT_LIMITS,
    *,
    chunk_size: int = CHUNK_SIZE,
    release: Release | None = None,
) -> HashResult:
    """Compute every requested digest of ``data`` (the bytes ``image`` was parsed from).

    ``release(offset, length)`` is called for each chunk once every digest has consumed it; a
    caller that mapped the file can drop those pages from its resident set (see
    :func:`mmap_releaser`), so memory stays flat whatever the file size.
    """
    view = _byte_view(data)
    _check(len(view), image, limits, chunk_size)
    return _compute(Whole(view), image, request, chunk_size, release)


def compute_hashes_streamed(
    source: ByteSource,
    image: PEImage,
    request: HashRequest,
    limits: Limits = DEFAULT_LIMITS,
    *,
    chunk_size: int | None = None,
) -> HashResult:
    """:func:`compute_hashes` of the file ``source`` reads, pulled chunk by chunk: the bytes
    held at once are at most two chunks plus a page each, whatever the file size. Raises
    ``OSError`` when the source does (a short read included)."""
    chunk = STREAM_CHUNK_SIZE if chunk_size is None else chunk_size
    _check(source.size, image, limits, chunk)
    return _compute(Streamed(source, chunk), image, request, chunk, None)


def hashes_of(
    data: bytes | bytearray | memoryview,
    source: ByteSource | None,
    image: PEImage,
    request: HashRequest,
    limits: Limits,
    release: Release | None = None,
) -> HashResult:
    """The hashing pass over a file: streamed from ``source`` when there is one (``data`` is
    then the parsers' demand buffer, not the bytes to hash), else over ``data``."""
    if source is not None:
        return compute_hashes_streamed(source, image, request, limits)
    return compute_hashes(data, image, request, limits, release=release)


def _check(size: int, image: PEImage, limits: Limits, chunk_size: int) -> None:
    if size != image.size:
        raise MalformedImage(
            None, "image", f"buffer of {size} bytes, but the image parsed has {image.size}"
        )
    if size > limits.max_file_size:
        raise MalformedImage(None, "file size", f"exceeds the limit of {limits.max_file_size}")
    if chunk_size < 8192 or chunk_size % 8192:
        raise ConfigError(f"chunk size {chunk_size} is not a positive multiple of 8 KiB")


def _compute(
    chunks: Whole | Streamed,
    image: PEImage,
    request: HashRequest,
    chunk_size: int,
    release: Release | None,
) -> HashResult:
    size = chunks.size
    linear = linear_ranges(image)
    image_feeds = {alg: _RangeFeed(alg, linear) for alg in sorted(request.image)}
    flat_feeds = {alg: _RangeFeed(alg, [(0, size)]) for alg in sorted(request.flat)}
    efi = efi_spec_ranges(image) if request.efi_spec_form else []
    efi_in_pass = _is_monotonic(efi)
    efi_feeds = {alg: _RangeFeed(alg, efi) for alg in sorted(request.efi_spec_form)}
    page_feeds = [_PageFeed(table, image) for table in request.page_tables]
    streams: list[_RangeFeed] = [*image_feeds.values(), *flat_feeds.values()]
    if efi_in_pass:
        streams += efi_feeds.values()
    run_pass(chunks, streams, page_feeds, chunk_size, release)
    if not efi_in_pass:
        # Overlapping or unsorted sections: the spec form revisits bytes; EFI images are small.
        for feed in efi_feeds.values():
            for a, b in feed.ranges:
                for lo in range(a, b, chunk_size):
                    hi = min(b, lo + chunk_size)
                    window, base = chunks.window(lo, hi - lo)
                    feed.hasher.update(window[lo - base : hi - base])

    pad = (8 - image.hash_end % 8) % 8 if not image.has_cert_table else 0
    padded: dict[str, bytes] = {}
    unpadded: dict[str, bytes] = {}
    for alg, feed in image_feeds.items():
        unpadded[alg] = feed.hasher.digest()
        if pad:
            tail = feed.hasher.copy()
            tail.update(_ZEROS[:pad])
            padded[alg] = tail.digest()
        else:
            padded[alg] = unpadded[alg]
    return HashResult(
        image=padded,
        image_unpadded=unpadded,
        efi_spec={alg: feed.hasher.digest() for alg, feed in efi_feeds.items()},
        pages=tuple(feed.result() for feed in page_feeds),
        first_page={alg: _first_page(chunks, image, alg) for alg in sorted(request.first_page)},
        flat={alg: feed.hasher.digest() for alg, feed in flat_feeds.items()},
    )


def _first_page(chunks: Whole | Streamed, image: PEImage, algorithm: str) -> bytes:
    view, _base = chunks.window(0, FIRST_PAGE_SIZE)
    return first_page_digest(view, image, algorithm)


def mmap_releaser(mapping: mmap.mmap) -> Release | None:
    """A ``release`` hook that drops hashed chunks of a read-only shared mapping from the
    resident set (MADV_DONTNEED; the page cache keeps them). None where madvise is missing.
    Never use it on an ACCESS_COPY mapping: it would discard private changes."""
    advice = getattr(mmap, "MADV_DONTNEED", None)
    if advice is None or not hasattr(mapping, "madvise"):
        return None

    def release(offset: int, length: int) -> None:
        mapping.madvise(advice, offset, length)

    return release
