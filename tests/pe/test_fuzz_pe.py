"""Property tests: truncated and mutated real files either parse or raise a CIError subclass,
never anything else, and never hang."""

from __future__ import annotations

import struct
from functools import cache

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codeintegrity.errors import CIError
from codeintegrity.limits import Limits
from codeintegrity.pe.certtable import parse_cert_table
from codeintegrity.pe.hashing import HashRequest, compute_hashes
from codeintegrity.pe.layout import parse_pe, pe_checksum
from codeintegrity.pe.pagehash import parse_page_hash_table
from tests.conftest import FIXTURES, SAMPLES

BASES = (
    FIXTURES / "t64_sha256_ph.exe",  # PE32+ with a page-hash table
    FIXTURES / "cli32_sha256_ph.exe",  # PE32
    FIXTURES / "fbx64_sbsign.efi",  # EFI
    SAMPLES / "signed/deb__fwupd-amd64-signed_1%3a1.4+1_amd64/fwupdx64.efi.signed",
)
LIMITS = Limits(max_page_hash_entries=4096)
FUZZ = settings(
    max_examples=300,
    deadline=5000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@cache
def base(index: int) -> bytes:
    return BASES[index].read_bytes()


def hot_offsets(data: bytes) -> list[int]:
    """Fields worth mutating: the PE headers, the section table and the certificate table."""
    spots = list(range(0, min(len(data), 0x400)))
    if len(data) > 0x40:
        lfanew = struct.unpack_from("<I", data, 0x3C)[0]
        certdir = lfanew + 168
        if certdir + 8 <= len(data):
            cert = struct.unpack_from("<I", data, certdir)[0]
            spots += range(min(cert, len(data)), min(cert + 64, len(data)))
    return spots


def run_everything(data: bytes, page_raw: bytes) -> None:
    """The whole PE layer on ``data``; only CIError may escape."""
    try:
        image = parse_pe(data, LIMITS)
    except CIError as exc:
        assert "\n" not in exc.diagnostics()
        return
    table = parse_cert_table(data, image, LIMITS)
    assert table.present or not table.entries
    tables = []
    for algorithm in ("sha1", "sha256"):
        parsed, findings = parse_page_hash_table(page_raw, algorithm, image, LIMITS, 0)
        assert parsed is not None or findings
        if parsed is not None:
            tables.append(parsed)
    request = HashRequest(
        image=frozenset({"sha256"}),
        page_tables=tuple(tables),
        efi_spec_form=frozenset({"sha1"}),
        first_page=frozenset({"sha256"}),
    )
    result = compute_hashes(data, image, request, LIMITS, chunk_size=16384)
    assert len(result.image["sha256"]) == 32
    assert [len(p) for p in result.pages] == [len(t) for t in tables]
    assert 0 <= pe_checksum(data, image) <= 0xFFFFFFFF


@FUZZ
@given(
    which=st.integers(0, len(BASES) - 1),
    cut=st.floats(0, 1),
    page_raw=st.binary(max_size=200),
)
def test_truncations(which: int, cut: float, page_raw: bytes) -> None:
    data = base(which)
    run_everything(data[: int(len(data) * cut)], page_raw)


@FUZZ
@given(
    which=st.integers(0, len(BASES) - 1),
    mutations=st.lists(st.tuples(st.integers(0, 10**9), st.integers(0, 255)), max_size=12),
    page_raw=st.binary(max_size=200),
)
def test_byte_mutations(which: int, mutations: list[tuple[int, int]], page_raw: bytes) -> None:
    data = bytearray(base(which))
    spots = hot_offsets(bytes(data))
    for where, value in mutations:
        data[spots[where % len(spots)]] = value
    run_everything(bytes(data), page_raw)


@FUZZ
@given(
    which=st.integers(0, len(BASES) - 1),
    field=st.sampled_from([0x3C, 6, 20, 24, 84, 92, 108, 152, 156, 168, 172]),
    value=st.sampled_from([0, 1, 4, 7, 8, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF]),
    page_raw=st.binary(max_size=80),
)
def test_header_fields_set_to_edge_values(
    which: int, field: int, value: int, page_raw: bytes
) -> None:
    data = bytearray(base(which))
    at = field if field == 0x3C else struct.unpack_from("<I", data, 0x3C)[0] + field
    struct.pack_into("<I", data, at, value)
    run_everything(bytes(data), page_raw)


@cache
def real_page_table() -> bytes:
    from .oracle import signed_images

    data = base(0)
    entry = parse_cert_table(data, parse_pe(data)).signatures[0]
    raw = signed_images(entry.data)[0].page_hash_raw
    assert raw is not None
    return raw


@FUZZ
@given(
    entries=st.lists(st.tuples(st.integers(0, 29), st.integers(0, 0x30000)), max_size=6),
    cut=st.integers(0, 36 * 30),
)
def test_mutated_real_page_table(entries: list[tuple[int, int]], cut: int) -> None:
    raw = bytearray(real_page_table())
    for index, offset in entries:
        struct.pack_into("<I", raw, 36 * index, offset)
    run_everything(base(0), bytes(raw[: len(raw) - cut]))
