"""compute_hashes against independent oracles: signify's Authentihash table, the digests signed
inside every fixture and sample, osslsigncode's page tables, and plain reference code."""

from __future__ import annotations

import hashlib
import json
import mmap
from pathlib import Path

import pytest

from codeintegrity.errors import ConfigError, MalformedImage
from codeintegrity.pe import hashing, hashpass
from codeintegrity.pe.certtable import parse_cert_table
from codeintegrity.pe.hashing import HashRequest, compute_hashes, mmap_releaser
from codeintegrity.pe.layout import PEImage, parse_pe
from codeintegrity.pe.pagehash import PageHashTable, parse_page_hash_table
from tests.conftest import FIXTURES, SAMPLES, SIGNIFY

from .oracle import ids, pe_files, signed_files, signed_images

T64 = SAMPLES / "unsigned/pypi__distlib-0.4.4-py2.py3-none-any/t64.exe"
SPOTIFY = SIGNIFY / "spotify_sample.exe"  # SizeOfHeaders runs over the first section
ALL = ("md5", "sha1", "sha256", "sha384", "sha512")
# (file, signature index) pairs whose image digest must NOT match: the tampered fixtures.
TAMPERED = {
    ("bad_flip_text.exe", 0),
    ("bad_flip_rdata.exe", 0),
    ("bad_flip_overlay_pagehash_ok.exe", 0),
    ("bad_nested_flip_text.exe", 0),
    ("bad_nested_flip_text.exe", 1),
    ("bad_shared_writable_not_resigned.exe", 0),
    ("bad_fbx64_sbsign_flip_text.efi", 0),
    ("sigcheck_bad_sha1_indirect_digest.exe", 0),
    ("sigcheck_bad_sha256_indirect_digest.exe", 1),
}


def reference_linear(data: bytes, image: PEImage, algorithm: str, pad: bool = True) -> bytes:
    """The linear form written as plain slicing (authenticode.md 1.3 pseudo-code)."""
    cks, cd = image.checksum_offset, image.certdir_offset
    assert cd is not None
    end = min(image.cert_table_offset, len(data)) if image.has_cert_table else len(data)
    body = data[:cks] + data[cks + 4 : cd] + data[cd + 8 : end]
    if pad and not image.has_cert_table and end % 8:
        body += bytes(8 - end % 8)
    return hashlib.new(algorithm, body).digest()


def reference_first_page(data: bytes, image: PEImage, algorithm: str) -> bytes:
    span = min(image.size_of_headers, 4096)
    cks, cd = image.checksum_offset, image.certdir_offset
    assert cd is not None
    head = data[:span]
    body = head[:cks] + head[cks + 4 : cd] + head[cd + 8 :]
    return hashlib.new(algorithm, body + bytes(4096 - span)).digest()


# --- oracles ----------------------------------------------------------------------------------


def signify_cases() -> list[tuple[str, Path, dict[str, str]]]:
    expected = json.loads((SIGNIFY / "fingerprint_results.json").read_text())
    by_sha256 = {hashlib.sha256(p.read_bytes()).hexdigest(): p for p in SIGNIFY.iterdir()}
    cases = []
    for key, value in expected.items():
        path = (
            SIGNIFY / key
            if (SIGNIFY / key).is_file()
            else by_sha256.get(value["generic"]["sha256"])
        )
        if path is not None:
            cases.append((key, path, value["authentihash"]))
    return cases


SIGNIFY_CASES = signify_cases()


def test_signify_oracle_covers_enough_files() -> None:
    assert len(SIGNIFY_CASES) >= 7


@pytest.mark.parametrize(
    ("key", "path", "expected"), SIGNIFY_CASES, ids=[c[0] for c in SIGNIFY_CASES]
)
def test_signify_authentihashes(key: str, path: Path, expected: dict[str, str]) -> None:
    data = path.read_bytes()
    image = parse_pe(data)
    result = compute_hashes(data, image, HashRequest(frozenset(expected)))
    assert {alg: digest.hex() for alg, digest in result.image.items()} == expected


# bad_truncate_cert.exe has no readable signature; test_table_past_eof_clamps_the_hash covers it.
SIGNED = [p for p in signed_files() if p.name != "bad_truncate_cert.exe"]


@pytest.mark.parametrize("path", SIGNED, ids=ids(SIGNED))
def test_image_digest_equals_the_signed_digest(path: Path) -> None:
    data = path.read_bytes()
    image = parse_pe(data)
    table = parse_cert_table(data, image)
    assert not table.malformed
    images = [s for e in table.signatures for s in signed_images(e.data)]
    assert images
    result = compute_hashes(data, image, HashRequest(frozenset(s.digest_algorithm for s in images)))
    for index, signed in enumerate(images):
        matches = result.image[signed.digest_algorithm] == signed.digest
        assert matches == ((path.name, index) not in TAMPERED), (path.name, index)
        # A signed file has no padded/unpadded ambiguity.
        assert result.image_unpadded == result.image


def test_tampered_list_names_real_files() -> None:
    names = {p.name for p in SIGNED}
    assert {name for name, _ in TAMPERED} <= names


@pytest.mark.parametrize(
    "path", pe_files(SAMPLES) + pe_files(FIXTURES), ids=ids(pe_files(SAMPLES) + pe_files(FIXTURES))
)
def test_matches_reference_code(path: Path) -> None:
    data = path.read_bytes()
    image = parse_pe(data)
    result = compute_hashes(
        data, image, HashRequest(frozenset({"sha256", "md5"}), first_page=frozenset({"sha1"}))
    )
    assert result.image["sha256"] == reference_linear(data, image, "sha256")
    assert result.image_unpadded["md5"] == reference_linear(data, image, "md5", pad=False)
    assert result.first_page["sha1"] == reference_first_page(data, image, "sha1")


# --- the 8-byte pad of unsigned files --------------------------------------------------------


@pytest.mark.parametrize("extra", [1, 3, 7])
def test_unaligned_unsigned_file_is_padded(extra: int) -> None:
    data = T64.read_bytes() + b"\x5a" * extra
    assert len(data) % 8
    image = parse_pe(data)
    result = compute_hashes(data, image, HashRequest(frozenset(ALL)))
    for alg in ALL:
        assert result.image[alg] != result.image_unpadded[alg]
        assert result.image[alg] == reference_linear(data, image, alg)
        assert result.image_unpadded[alg] == reference_linear(data, image, alg, pad=False)


def test_aligned_unsigned_file_has_one_digest() -> None:
    data = T64.read_bytes()
    assert len(data) % 8 == 0
    image = parse_pe(data)
    result = compute_hashes(data, image, HashRequest(frozenset(ALL)))
    assert result.image == result.image_unpadded
    assert set(result.image) == set(ALL)


def test_osslsigncode_unsigned_test_file_pads() -> None:
    data = (FIXTURES.parent / "fixtures_base" / "ossl_unsigned.exe").read_bytes()
    image = parse_pe(data)
    result = compute_hashes(data, image, HashRequest(frozenset({"sha256"})))
    assert len(data) % 8 == 6 and result.image != result.image_unpadded


# --- first page, flat, EFI form ---------------------------------------------------------------


def test_first_page_equals_the_signed_header_page_hash() -> None:
    # With SizeOfHeaders <= 4096 the WDAC "Hash Page" is page 0 of a page-hash table.
    for path in (FIXTURES / "t64_sha256_ph.exe", SIGNIFY / "DXCore.dll"):
        data = path.read_bytes()
        image = parse_pe(data)
        (signed,) = [
            s for e in parse_cert_table(data, image).signatures for s in signed_images(e.data)
        ]
        result = compute_hashes(
            data, image, HashRequest(frozenset(), first_page=frozenset({"sha256"}))
        )
        assert result.first_page["sha256"] == signed.page_hash_raw[4:36]


def test_flat_hashes() -> None:
    data = (FIXTURES / "t64_sha256_ph.exe").read_bytes()
    result = compute_hashes(data, parse_pe(data), HashRequest(frozenset(), flat=frozenset(ALL)))
    assert result.flat == {alg: hashlib.new(alg, data).digest() for alg in ALL}
    assert result.image == {} and result.pages == ()


def reference_efi(data: bytes, image: PEImage, algorithm: str) -> bytes:
    """Authenticode_PE.docx steps 1-15 written out directly."""
    cks, cd = image.checksum_offset, image.certdir_offset
    assert cd is not None
    head = data[: image.size_of_headers]
    body = head[:cks] + head[cks + 4 : cd] + head[cd + 8 :]
    hashed = image.size_of_headers
    for section in sorted(image.sections, key=lambda s: s.raw_offset):
        if section.raw_size:
            body += data[section.raw_offset : section.raw_end]
            hashed += section.raw_size
    if len(data) > hashed:
        body += data[hashed : len(data) - image.cert_table_size]
    return hashlib.new(algorithm, body).digest()


@pytest.mark.parametrize(
    ("path", "same"),
    [
        (FIXTURES / "fbx64_sbsign.efi", True),
        (SAMPLES / "signed/deb__fwupd-amd64-signed_1%3a1.4+1_amd64/fwupdx64.efi.signed", True),
        (SPOTIFY, False),  # headers overlap the first section: the forms disagree
        (FIXTURES / "bad_append_after_cert.exe", False),  # extra data counted differently
    ],
    ids=lambda v: v.name if isinstance(v, Path) else str(v),
)
def test_efi_spec_form(path: Path, same: bool) -> None:
    data = path.read_bytes()
    image = parse_pe(data)
    result = compute_hashes(
        data, image, HashRequest(frozenset({"sha256"}), efi_spec_form=frozenset({"sha256"}))
    )
    assert result.efi_spec["sha256"] == reference_efi(data, image, "sha256")
    assert (result.efi_spec["sha256"] == result.image["sha256"]) is same


# --- chunking, threads and the release hook --------------------------------------------------


def page_table(path: Path) -> tuple[bytes, PEImage, PageHashTable]:
    data = path.read_bytes()
    image = parse_pe(data)
    entry = parse_cert_table(data, image).signatures[0]
    signed = next(s for s in signed_images(entry.data) if s.page_hash_raw)
    assert signed.page_hash_algorithm and signed.page_hash_raw
    table, _ = parse_page_hash_table(signed.page_hash_raw, signed.page_hash_algorithm, image)
    assert table is not None
    return data, image, table


def full_request(table: PageHashTable) -> HashRequest:
    return HashRequest(
        image=frozenset({"sha1", "sha256", "md5"}),
        page_tables=(table, table),
        efi_spec_form=frozenset({"sha256"}),
        first_page=frozenset({"sha256"}),
        flat=frozenset({"sha512"}),
    )


@pytest.mark.parametrize("workers", [0, 1, 2])
@pytest.mark.parametrize("chunk", [8192, 65536, hashing.CHUNK_SIZE])
def test_results_do_not_depend_on_chunks_or_threads(
    monkeypatch: pytest.MonkeyPatch, chunk: int, workers: int
) -> None:
    data, image, table = page_table(SIGNIFY / "DXCore.dll")
    expected = compute_hashes(data, image, full_request(table))
    assert expected.pages[0] == table.digests
    if workers:
        monkeypatch.setattr(hashpass, "PARALLEL_MIN_SIZE", 0)
        monkeypatch.setattr(hashpass, "WORKERS", workers)
        monkeypatch.setattr(hashpass, "_executor", None)  # a fresh pool of that size
    assert (
        compute_hashes(memoryview(data), image, full_request(table), chunk_size=chunk) == expected
    )


def test_release_hook_sees_every_chunk_once(tmp_path: Path) -> None:
    data, image, table = page_table(FIXTURES / "t64_sha256_ph.exe")
    seen: list[tuple[int, int]] = []
    result = compute_hashes(
        data, image, full_request(table), chunk_size=16384, release=lambda o, n: seen.append((o, n))
    )
    assert seen[0][0] == 0 and sum(n for _, n in seen) == len(data)
    assert all(a + n == b for (a, n), (b, _) in zip(seen, seen[1:], strict=False))
    assert result.pages[0] == table.digests


def test_mmap_input_and_releaser(tmp_path: Path) -> None:
    path = FIXTURES / "t64_sha256_ph.exe"
    data, image, table = page_table(path)
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        view = memoryview(mm)
        try:
            result = compute_hashes(
                view,
                parse_pe(view),
                full_request(table),
                chunk_size=16384,
                release=mmap_releaser(mm),
            )
        finally:
            view.release()
    assert result == compute_hashes(data, image, full_request(table))
    assert result.pages[0] == table.digests


# --- hand-made tables and bad requests -------------------------------------------------------


def test_hand_made_table_out_of_order_and_past_eof() -> None:
    data, image, table = page_table(FIXTURES / "t64_sha256_ph.exe")
    size = len(data)
    offsets = (0, 0x400, 0x2400, 0x1400, size + 0x1000)
    weird = PageHashTable("sha256", offsets, (bytes(32),) * 5, size + 0x2000)
    (pages,) = compute_hashes(data, image, HashRequest(frozenset(), page_tables=(weird,))).pages
    zero_page = hashlib.sha256(bytes(4096)).digest()
    assert table.offsets[:3] == (0, 0x400, 0x1400)
    assert pages[0] == table.digests[0]  # bounded by the next entry: the 0x400-byte header
    assert pages[1] == table.digests[1]
    assert pages[2] == zero_page  # the next entry lies before it: no bytes
    assert pages[3] == table.digests[2]
    assert pages[4] == zero_page  # nothing before the hashed end: a page of zeros


def test_unsupported_algorithm_is_a_typed_error() -> None:
    data = T64.read_bytes()
    with pytest.raises(ConfigError):
        compute_hashes(data, parse_pe(data), HashRequest(frozenset({"sha3_256"})))


def test_buffer_must_be_the_parsed_image() -> None:
    data = T64.read_bytes()
    with pytest.raises(MalformedImage):
        compute_hashes(data[:-8], parse_pe(data), HashRequest(frozenset({"sha256"})))
    with pytest.raises(ConfigError):
        compute_hashes(data, parse_pe(data), HashRequest(frozenset({"sha256"})), chunk_size=1000)


def test_table_past_eof_clamps_the_hash() -> None:
    data = (FIXTURES / "bad_truncate_cert.exe").read_bytes()
    image = parse_pe(data)
    assert image.cert_table_offset + image.cert_table_size > len(data)
    result = compute_hashes(data, image, HashRequest(frozenset({"sha256"})))
    assert result.image["sha256"] == reference_linear(data, image, "sha256")
    assert result.image == result.image_unpadded  # a table is named: no unsigned padding


@pytest.mark.parametrize("workers", [0, 1])
def test_each_chunk_is_released_right_after_it_is_hashed(
    monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    # Memory stays flat only if chunks are released while the pass goes on, not at its end.
    data, image, table = page_table(FIXTURES / "t64_sha256_ph.exe")
    chunk = 8192
    if workers:
        monkeypatch.setattr(hashpass, "PARALLEL_MIN_SIZE", 0)
        monkeypatch.setattr(hashpass, "WORKERS", workers)
        monkeypatch.setattr(hashpass, "_executor", None)
    log: list[tuple[str, int]] = []
    feed_bin = hashpass._feed_bin

    def logged(feeds: list, parts: list) -> None:
        feed_bin(feeds, parts)
        log.append(("fed", min(max(hi for _v, _b, _lo, hi in parts), len(data))))

    monkeypatch.setattr(hashpass, "_feed_bin", logged)
    request = HashRequest(frozenset({"sha256", "sha1"}), page_tables=(table,))
    result = compute_hashes(
        data, image, request, chunk_size=chunk, release=lambda o, n: log.append(("released", o))
    )
    assert result == compute_hashes(data, image, request)
    released = [o for kind, o in log if kind == "released"]
    assert released == list(range(0, len(data), chunk))
    for i, (kind, offset) in enumerate(log):
        if kind == "released":
            # Nothing has read more than two chunks past a chunk when it is released.
            assert max(o for k, o in log[:i] if k == "fed") <= offset + 3 * chunk
