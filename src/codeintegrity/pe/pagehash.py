"""Page-hash tables (SpcPeImagePageHashes V1/V2): parse, validate and compare.

The table is a flat array of ``{u32le file offset; digest}`` entries ending with a terminator
whose digest is all zero (authenticode.md 2.2). The terminator's offset is only used to bound
the last page: generators disagree about its exact value (end of raw data vs. last page + 4 KiB).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from ..findings import Finding, FindingCode
from ..limits import DEFAULT_LIMITS, Limits
from .layout import PEImage, Section

PAGE_HASH_DIGEST_SIZES = {"sha1": 20, "sha256": 32}


@dataclass(frozen=True, slots=True)
class PageHashTable:
    """A validated table. ``offsets``/``digests`` exclude the terminator; ``end`` is its offset."""

    algorithm: str  # "sha1" | "sha256"
    offsets: tuple[int, ...]
    digests: tuple[bytes, ...]
    end: int

    def __len__(self) -> int:
        return len(self.offsets)


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
    raw = bytes(raw)
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

    offsets, digests = map(list, zip(*struct.iter_unpack(f"<I{digest_size}s", raw), strict=True))
    usable = True
    if offsets[0] != 0:
        malformed(f"first entry is at {offsets[0]:#x}, not at the headers (0)", 0, offsets[0])
        usable = False
    hashed_end = image.hash_end
    for i in range(1, count):
        if offsets[i] <= offsets[i - 1]:
            malformed(
                f"entry {i} offset {offsets[i]:#x} does not follow {offsets[i - 1]:#x}",
                i,
                offsets[i],
            )
            usable = False
            break
    for i in range(count - 1):  # the terminator only bounds the last page
        if offsets[i] >= hashed_end:
            malformed(
                f"entry {i} offset {offsets[i]:#x} is at or past the hashed end {hashed_end:#x}",
                i,
                offsets[i],
            )
            usable = False
            break
    if any(digests[-1]):
        # Still usable: every page digest is present; only the terminator is wrong.
        malformed("terminator digest is not all zero", count - 1, offsets[-1])
    if not usable:
        return None, findings
    table = PageHashTable(
        algorithm=algorithm,
        offsets=tuple(offsets[:-1]),
        digests=tuple(digests[:-1]),
        end=offsets[-1],
    )
    return table, findings


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
