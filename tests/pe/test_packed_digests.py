"""PackedDigests (page digests read in place) and the vectorised table checks, against plain
reference code written the obvious way (one struct.unpack per entry, loops over entries)."""

from __future__ import annotations

import random
import struct
from dataclasses import replace

import pytest

from codeintegrity.findings import FindingCode
from codeintegrity.limits import Limits
from codeintegrity.pe.layout import PEImage
from codeintegrity.pe.pagehash import (
    PackedDigests,
    PageHashTable,
    compare_page_hashes,
    parse_page_hash_table,
)
from tests.conftest import FIXTURES

from .test_pagehash import signed_table


def reference_entries(raw: bytes, size: int) -> list[tuple[int, bytes]]:
    step = 4 + size
    return [
        (struct.unpack_from("<I", raw, i)[0], raw[i + 4 : i + step])
        for i in range(0, len(raw), step)
    ]


def test_a_real_table_read_in_place() -> None:
    _, image, algorithm, raw = signed_table(FIXTURES / "t64_sha256_ph.exe")
    entries = reference_entries(raw, 32)
    table, problems = parse_page_hash_table(raw, algorithm, image)
    assert problems == [] and table is not None
    digests = table.digests
    assert isinstance(digests, PackedDigests) and digests.digest_size == 32
    assert table.offsets == tuple(off for off, _ in entries[:-1])
    assert tuple(digests) == tuple(d for _, d in entries[:-1]) == digests
    assert digests[0] == entries[0][1] and digests[-1] == entries[-2][1]
    assert digests[2:5] == tuple(d for _, d in entries[2:5])
    assert list(digests[:-1]) == [d for _, d in entries[:-2]]
    with pytest.raises(IndexError):
        digests[len(entries) - 1]


def test_word_comparison_agrees_with_byte_comparison() -> None:
    rng = random.Random(7)
    count = 300
    table = b"".join(struct.pack("<I", i * 4096) + rng.randbytes(32) for i in range(count))
    packed = PackedDigests(table, 32, start=4, stride=36, count=count)
    computed = b"".join(packed)
    assert PackedDigests(computed, 32) == packed == list(packed)
    for position in (0, 31, 32 * 150 + 7, len(computed) - 1):
        flipped = bytearray(computed)
        flipped[position] ^= 1
        assert PackedDigests(bytes(flipped), 32) != packed
    # Not word-aligned: compared entry by entry, same answers.
    shifted = b"\0" + computed + b"\0\0\0"
    assert PackedDigests(shifted, 32, start=1, count=count) == packed
    assert PackedDigests(shifted, 32, start=1, count=count - 1) != packed
    assert PackedDigests(computed, 20, stride=32) != PackedDigests(computed, 32)
    assert packed != 5 and packed != (b"x",) * count


@pytest.mark.parametrize(
    ("size", "start", "stride", "count"),
    [(0, 0, 0, 1), (32, 0, 16, 1), (32, -1, 0, 1), (32, 4, 36, 9)],
)
def test_layouts_that_do_not_fit_are_refused(
    size: int, start: int, stride: int, count: int
) -> None:
    with pytest.raises(ValueError):
        PackedDigests(bytes(36 * 8), size, start=start, stride=stride, count=count)


def test_packed_digests_are_not_hashable() -> None:
    with pytest.raises(TypeError):
        hash(PackedDigests(bytes(64), 32))


# --- the vectorised checks against the entry-by-entry rules ---------------------------------


def reference_parse(raw: bytes, image: PEImage) -> tuple[list[tuple[int | None, int | None]], bool]:
    """(page, offset) of each finding and whether the table is usable, rule by rule."""
    entries = reference_entries(raw, 32)
    offsets = [off for off, _ in entries]
    found: list[tuple[int | None, int | None]] = []
    usable = True
    if offsets[0] != 0:
        found.append((0, offsets[0]))
        usable = False
    for i in range(1, len(offsets)):
        if offsets[i] <= offsets[i - 1]:
            found.append((i, offsets[i]))
            usable = False
            break
    for i in range(len(offsets) - 1):
        if offsets[i] >= image.hash_end:
            found.append((i, offsets[i]))
            usable = False
            break
    if any(entries[-1][1]):
        found.append((len(entries) - 1, offsets[-1]))
    return found, usable


def big_image() -> PEImage:
    """A real image whose hashed end is pushed out to 300 MiB (only hash_end is read)."""
    _, image, _, _ = signed_table(FIXTURES / "t64_sha256_ph.exe")
    return replace(image, size=300 << 20, cert_table_offset=300 << 20)


def build_table(rng: random.Random, count: int) -> list[list]:
    entries = [[i * 4096, rng.randbytes(32)] for i in range(count)]
    entries[-1][1] = bytes(32)
    return entries


def pack(entries: list[list]) -> bytes:
    return b"".join(struct.pack("<I", off) + digest for off, digest in entries)


def test_vectorised_checks_match_the_rules_on_large_tables() -> None:
    image = big_image()
    rng = random.Random(2026)
    count = 60_000
    base = build_table(rng, count)
    edits = [
        lambda e: None,
        lambda e: e.__setitem__(0, [0x1000, e[0][1]]),
        lambda e: e.__setitem__(40_000, [e[39_999][0], e[40_000][1]]),  # equal offsets
        lambda e: e.__setitem__(12, [e[14][0], e[12][1]]),  # out of order
        lambda e: e.__setitem__(59_000, [image.hash_end, e[59_000][1]]),
        lambda e: e.__setitem__(count - 1, [e[-1][0], b"\1" * 32]),
        lambda e: [e.__setitem__(k, [e[k][0] + (300 << 20), e[k][1]]) for k in (5, 9)],
    ]
    for edit in edits:
        entries = [list(x) for x in base]
        edit(entries)
        raw = pack(entries)
        table, problems = parse_page_hash_table(raw, "sha256", image, Limits(), 1)
        expected, usable = reference_parse(raw, image)
        assert [(p.page, p.offset) for p in problems] == expected
        assert all(p.code is FindingCode.PAGE_HASH_TABLE_MALFORMED for p in problems)
        assert (table is not None) is usable
        if table is not None:
            assert table.offsets == tuple(off for off, _ in entries[:-1])
            assert table.end == entries[-1][0]
            assert tuple(table.digests) == tuple(d for _, d in entries[:-1])


def test_compare_finds_every_mismatch_after_the_fast_check_fails() -> None:
    image = big_image()
    entries = build_table(random.Random(3), 5000)
    table, _ = parse_page_hash_table(pack(entries), "sha256", image)
    assert table is not None
    computed = bytearray(b"".join(table.digests))
    assert compare_page_hashes(table, PackedDigests(bytes(computed), 32), 4) == []
    for page in (0, 1234, 4998):
        computed[page * 32 + 5] ^= 0x80
    findings = compare_page_hashes(table, PackedDigests(bytes(computed), 32), 4, image)
    assert [(f.code, f.page, f.offset) for f in findings] == [
        (FindingCode.PAGE_HASH_MISMATCH, page, page * 4096) for page in (0, 1234, 4998)
    ]
    # A plain list of digests takes the same path.
    as_list = [bytes(computed[i : i + 32]) for i in range(0, len(computed), 32)]
    assert compare_page_hashes(table, as_list, 4) == findings
    hand_made = PageHashTable("sha256", table.offsets, tuple(table.digests), table.end)
    assert compare_page_hashes(hand_made, as_list, 4) == findings
