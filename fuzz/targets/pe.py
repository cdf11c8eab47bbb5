"""PE layout + certificate table + page-hash tables + hashing (``compute_hashes``).

Invariants beyond "only typed errors escape":
- ``parse_cert_table`` never raises; entries lie inside the file, in order, and a table marked
  malformed says why (a finding);
- every digest ``compute_hashes`` returns has its algorithm's size, and is the same whatever
  the chunk size (the streaming, the worker thread and the chunk seams change nothing);
- the unpadded image digest equals one hash over ``linear_ranges`` joined, and the flat digest
  one hash over the whole file (an independent, unstreamed computation);
- every page-hash table parsed yields exactly one computed digest per page.
"""

from __future__ import annotations

import hashlib
import struct

from codeintegrity.authenticode.oids import DIGEST_SIZES
from codeintegrity.authenticode.signeddata import parse_signatures
from codeintegrity.errors import CIError, MalformedSignature
from codeintegrity.limits import Limits
from codeintegrity.pe.certtable import CertEntry, parse_cert_table
from codeintegrity.pe.hashing import HashRequest, compute_hashes, linear_ranges
from codeintegrity.pe.layout import PEImage, parse_pe, pe_checksum
from codeintegrity.pe.pagehash import PageHashTable, parse_page_hash_table

from ..common import one_line, require

INPUT = "a PE file"
# Small enough that a fuzzed page-hash table cannot make one input take seconds.
LIMITS = Limits(max_page_hash_entries=4096, max_file_size=8 << 20)


def check(data: bytes) -> None:
    try:
        image = parse_pe(data, LIMITS)
    except CIError as exc:
        one_line(exc.diagnostics(), "parse_pe")
        return
    require(image.size == len(data), "PEImage.size is not the buffer size")
    require(len(image.sections) <= LIMITS.max_sections, "more sections than the limit")

    table = parse_cert_table(data, image, LIMITS)
    require(table.present or not table.entries, "entries without a certificate table")
    require(not table.malformed or table.findings, "malformed table without a finding")
    end = -1
    for entry in table.entries:
        require(entry.offset > end, "certificate entries out of order")
        require(0 <= entry.offset and entry.offset + entry.length <= len(data), "entry past EOF")
        require(len(entry.data) <= entry.length, "entry data longer than its entry")
        end = entry.offset
    for finding in table.findings:
        one_line(finding.detail, f"finding {finding.code}")

    tables = _page_tables(data, image, table.signatures)
    request = HashRequest(
        image=frozenset({"sha1", "sha256"}),
        page_tables=tuple(tables),
        efi_spec_form=frozenset({"sha256"}),
        first_page=frozenset({"sha1", "sha256"}),
        flat=frozenset({"sha256"}),
    )
    small = compute_hashes(data, image, request, LIMITS, chunk_size=8192)
    large = compute_hashes(data, image, request, LIMITS, chunk_size=65536)
    require(small == large, "digests depend on the chunk size")
    for group in (small.image, small.image_unpadded, small.first_page, small.flat, small.efi_spec):
        for alg, digest in group.items():
            require(len(digest) == DIGEST_SIZES[alg], f"{alg} digest of {len(digest)} bytes")
    linear = hashlib.sha256()
    for a, b in linear_ranges(image):
        linear.update(data[a:b])
    require(small.image_unpadded["sha256"] == linear.digest(), "image digest != linear ranges")
    require(small.flat["sha256"] == hashlib.sha256(data).digest(), "flat digest is wrong")
    for parsed, pages in zip(tables, small.pages, strict=True):
        require(len(pages) == len(parsed.offsets), "not one page digest per table entry")
    require(0 <= pe_checksum(data, image) <= 0xFFFFFFFF, "checksum out of range")


def _page_tables(
    data: bytes, image: PEImage, entries: tuple[CertEntry, ...]
) -> list[PageHashTable]:
    """The page-hash tables of the file's signatures, else one synthesised from its layout
    (so page hashing runs on every fuzzed layout, not only on intact signatures)."""
    raws: list[tuple[bytes, str]] = []
    for entry in entries:
        try:
            signatures = parse_signatures(entry.data, entry.index, LIMITS)
        except MalformedSignature:
            continue
        raws += [
            (sig.page_hash_raw, sig.page_hash_algorithm)
            for sig in signatures
            if sig.page_hash_raw is not None and sig.page_hash_algorithm is not None
        ]
    if not raws:
        starts = sorted({0, *(s.raw_offset for s in image.sections)})
        offsets = [o for o in starts if o < image.hash_end] + [image.hash_end]
        raws.append((b"".join(struct.pack("<I", o) + bytes(20) for o in offsets), "sha1"))
    out = []
    for raw, algorithm in raws:
        parsed, findings = parse_page_hash_table(raw, algorithm, image, LIMITS, 0)
        require(parsed is not None or findings, "unusable page-hash table without a finding")
        if parsed is not None:
            out.append(parsed)
    return out
