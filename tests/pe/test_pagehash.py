"""Page-hash tables: parsing the signed tables of real files, rejecting malformed ones, and
comparing computed digests (one mismatch for a flipped section byte, none for the overlay)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from codeintegrity.findings import FindingCode
from codeintegrity.limits import DEFAULT_LIMITS as DEFAULT
from codeintegrity.limits import Limits
from codeintegrity.pe.certtable import parse_cert_table
from codeintegrity.pe.hashing import HashRequest, compute_hashes
from codeintegrity.pe.layout import PEImage, parse_pe
from codeintegrity.pe.pagehash import PageHashTable, compare_page_hashes, parse_page_hash_table
from tests.conftest import FIXTURES, SIGNIFY

from .oracle import signed_images


def signed_table(path: Path, signature: int = 0) -> tuple[bytes, PEImage, str, bytes]:
    """(file bytes, image, page-hash algorithm, raw table) of one signature of a file."""
    data = path.read_bytes()
    image = parse_pe(data)
    table = parse_cert_table(data, image)
    images = [s for e in table.signatures for s in signed_images(e.data)]
    chosen = images[signature]
    assert chosen.page_hash_algorithm and chosen.page_hash_raw
    return data, image, chosen.page_hash_algorithm, chosen.page_hash_raw


def check(path: Path, signature: int = 0) -> tuple[PageHashTable, list]:
    data, image, algorithm, raw = signed_table(path, signature)
    table, problems = parse_page_hash_table(raw, algorithm, image, Limits(), signature)
    assert problems == [] and table is not None
    computed = compute_hashes(data, image, HashRequest(frozenset(), page_tables=(table,)))
    return table, compare_page_hashes(table, computed.pages[0], signature, image)


@pytest.mark.parametrize(
    ("path", "signature", "algorithm", "pages"),
    [
        (FIXTURES / "t64_sha256_ph.exe", 0, "sha256", 30),
        (FIXTURES / "t64_sha1_ph.exe", 0, "sha1", 30),
        (FIXTURES / "cli32_sha256_ph.exe", 0, "sha256", 7),
        (FIXTURES / "ossl_sha256_ph.exe", 0, "sha256", 27),
        (FIXTURES / "t64_nested_sha1+sha256ph.exe", 1, "sha256", 30),
        (SIGNIFY / "DXCore.dll", 0, "sha256", 74),  # real Microsoft table
    ],
    ids=lambda v: v.name if isinstance(v, Path) else str(v),
)
def test_every_page_matches(path: Path, signature: int, algorithm: str, pages: int) -> None:
    table, mismatches = check(path, signature)
    assert table.algorithm == algorithm and len(table) == pages
    assert table.offsets[0] == 0 and table.end > table.offsets[-1]
    assert mismatches == []


def test_dxcore_terminator_and_header_page() -> None:
    table, _ = check(SIGNIFY / "DXCore.dll")
    assert table.end == 0x4A000 and table.offsets[1] == 0x1000


@pytest.mark.parametrize(
    ("name", "signature", "page", "section"),
    [
        ("bad_flip_text.exe", 0, 1, ".text"),
        ("bad_flip_rdata.exe", 0, 16, ".rdata"),
        ("bad_nested_flip_text.exe", 1, 1, ".text"),
        ("bad_pagehash_only_sha256.exe", 0, 1, ".text"),
        ("bad_pagehash_only_sha1.exe", 0, 16, ".rdata"),
        ("bad_shared_writable_not_resigned.exe", 0, 0, None),  # header page
    ],
)
def test_exactly_one_page_differs(name: str, signature: int, page: int, section: str) -> None:
    table, mismatches = check(FIXTURES / name, signature)
    assert len(mismatches) == 1
    found = mismatches[0]
    assert found.code is FindingCode.PAGE_HASH_MISMATCH
    assert (found.page, found.offset, found.section) == (page, table.offsets[page], section)
    assert found.signature == signature and found.event_id == 6281


def test_overlay_flip_leaves_pages_valid() -> None:
    assert check(FIXTURES / "bad_flip_overlay_pagehash_ok.exe")[1] == []


# --- malformed tables -------------------------------------------------------------------------


def build(entries: list[tuple[int, bytes]]) -> bytes:
    return b"".join(struct.pack("<I", off) + digest for off, digest in entries)


def real() -> tuple[PEImage, list[tuple[int, bytes]]]:
    _, image, _, raw = signed_table(FIXTURES / "t64_sha256_ph.exe")
    return image, [
        (struct.unpack_from("<I", raw, i)[0], raw[i + 4 : i + 36]) for i in range(0, len(raw), 36)
    ]


def malformed(raw: bytes, image: PEImage, algorithm: str = "sha256", limits: Limits = DEFAULT):
    table, problems = parse_page_hash_table(raw, algorithm, image, limits, 3)
    assert problems and all(p.code is FindingCode.PAGE_HASH_TABLE_MALFORMED for p in problems)
    assert all(p.signature == 3 and p.event_id == 6281 for p in problems)
    return table, problems


def test_size_not_a_multiple_of_the_entry() -> None:
    image, entries = real()
    table, problems = malformed(build(entries)[:-1], image)
    assert table is None and "multiple" in problems[0].detail


def test_sha1_table_read_as_sha256() -> None:
    _, image, _, raw = signed_table(FIXTURES / "t64_sha1_ph.exe")
    assert malformed(raw, image, "sha256")[0] is None  # 30 * 24 bytes is not a multiple of 36


def test_too_few_and_too_many_entries() -> None:
    image, entries = real()
    assert malformed(build(entries[-1:]), image)[0] is None
    assert malformed(b"", image)[0] is None
    table, problems = malformed(build(entries), image, limits=Limits(max_page_hash_entries=5))
    assert table is None and "limit" in problems[0].detail


def test_first_offset_not_zero() -> None:
    image, entries = real()
    table, problems = malformed(build(entries[1:]), image)
    assert table is None and problems[0].page == 0


def test_offsets_not_increasing() -> None:
    image, entries = real()
    entries[5], entries[6] = entries[6], entries[5]
    table, problems = malformed(build(entries), image)
    assert table is None and problems[0].page == 6
    entries[5] = entries[6]  # equal offsets are not increasing either
    assert malformed(build(entries), image)[0] is None


def test_offset_at_or_past_the_hashed_end() -> None:
    image, entries = real()
    end = image.cert_table_offset
    entries[-2] = (end, entries[-2][1])
    entries[-1] = (end + 0x1000, bytes(32))
    table, problems = malformed(build(entries), image)
    assert table is None and problems[0].page == len(entries) - 2


def test_terminator_digest_not_zero_keeps_the_table() -> None:
    image, entries = real()
    entries[-1] = (entries[-1][0], b"\x01" * 32)
    table, problems = malformed(build(entries), image)
    assert table is not None and len(table) == len(entries) - 1
    assert "terminator" in problems[0].detail


def test_unsupported_algorithm() -> None:
    image, entries = real()
    assert malformed(build(entries), image, "md5")[0] is None


def test_terminator_offset_is_only_an_upper_bound() -> None:
    # Generators disagree about the terminator (end of raw data vs. last page + 4 KiB).
    data, image, algorithm, raw = signed_table(FIXTURES / "t64_sha256_ph.exe")
    _, entries = real()
    entries[-1] = (entries[-2][0] + 0x1000, bytes(32))
    table, problems = parse_page_hash_table(build(entries), algorithm, image, Limits(), 0)
    assert problems == [] and table is not None
    computed = compute_hashes(data, image, HashRequest(frozenset(), page_tables=(table,)))
    assert compare_page_hashes(table, computed.pages[0], 0) == []


def test_compare_with_the_wrong_number_of_digests() -> None:
    table, _ = check(FIXTURES / "t64_sha256_ph.exe")
    findings = compare_page_hashes(table, list(table.digests[:-1]), 2)
    assert [f.code for f in findings] == [FindingCode.PAGE_HASH_TABLE_MALFORMED]
    assert findings[0].signature == 2
