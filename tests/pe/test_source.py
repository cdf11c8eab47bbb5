"""verify_source: judging a file read through a ByteSource gives the report verify_bytes gives
for the same bytes, while the bytes held at once stay bounded by the chunk size and the parsers'
slices, whatever the file size."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from codeintegrity.catalog.index import CatalogIndex
from codeintegrity.errors import MalformedImage
from codeintegrity.options import VerifyOptions
from codeintegrity.pe import hashing, hashpass
from codeintegrity.pe import source as source_module
from codeintegrity.pe.hashing import HashRequest, compute_hashes, compute_hashes_streamed
from codeintegrity.pe.layout import parse_pe
from codeintegrity.pe.source import (
    DEMAND_BLOCK,
    BufferSource,
    DemandImage,
    FileDescriptorSource,
    FileObjectSource,
)
from codeintegrity.report import Check, Status
from codeintegrity.verify import verify_bytes, verify_path, verify_source
from tests.conftest import DATA, FIXTURES, SHARED_CORPUS

from .oracle import PE_SUFFIXES, ids


class CountingSource:
    """A source that records every read: its largest and the total."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.reads: list[tuple[int, int]] = []

    @property
    def size(self) -> int:
        return self.inner.size  # type: ignore[attr-defined, no-any-return]

    def read(self, offset: int, length: int) -> bytes | bytearray | memoryview:
        data = self.inner.read(offset, length)  # type: ignore[attr-defined]
        self.reads.append((offset, len(data)))
        return data  # type: ignore[no-any-return]

    @property
    def largest(self) -> int:
        return max((n for _o, n in self.reads), default=0)


def _fixture_files() -> list[Path]:
    """Every PE-named file of tests/data and the shared corpus, plus a few files that are not
    PE images (they must come out malformed the same way)."""
    found: list[Path] = []
    for folder in (DATA, SHARED_CORPUS / "samples"):
        if folder.is_dir():
            found += sorted(
                p
                for p in folder.rglob("*")
                if p.is_file() and p.suffix.lower() in PE_SUFFIXES and p.stat().st_size <= 8 << 20
            )
    found += [DATA / "PROVENANCE.md", FIXTURES / "fixtures.cat"]
    return found


FILES = _fixture_files()
AT = datetime(2025, 6, 1, tzinfo=UTC)
EVERYTHING = VerifyOptions(
    extra_digests=frozenset({"sha1", "sha256"}),
    first_page_digests=frozenset({"sha1", "sha256"}),
    flat_digests=frozenset({"sha256"}),
)


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Many chunks per file, and the worker thread in use: the chunk seams get exercised."""
    monkeypatch.setattr(hashing, "STREAM_CHUNK_SIZE", 8192)
    monkeypatch.setattr(hashpass, "PARALLEL_MIN_SIZE", 0)


@pytest.fixture(params=[DEMAND_BLOCK, 512], ids=["64k-blocks", "512-blocks"])
def demand_block(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """Small demand blocks: a parser reading anything it did not ask the Reader for (a hole)
    would see zeros and judge differently."""
    monkeypatch.setattr(source_module, "DEMAND_BLOCK", request.param)
    return int(request.param)


@pytest.mark.parametrize("path", FILES, ids=ids(FILES))
def test_streamed_report_equals_the_bytes_report(
    path: Path, small_chunks: None, demand_block: int, sample_trust: object
) -> None:
    data = path.read_bytes()
    options = VerifyOptions(
        trust=sample_trust,  # type: ignore[arg-type]
        extra_digests=EVERYTHING.extra_digests,
        first_page_digests=EVERYTHING.first_page_digests,
        flat_digests=EVERYTHING.flat_digests,
        at=AT,  # the judged time is in some findings' details
    )
    expected = verify_bytes(data, options, path=path.name)
    source = CountingSource(BufferSource(data))
    got = verify_source(source, options, path=path.name)
    assert got.to_dict() == expected.to_dict()
    # Chunks of 8 KiB plus a page of look-ahead; demand blocks of 64 KiB (a run of missing
    # blocks is one read, bounded by what the parsers ask for: headers, certificate table).
    assert source.largest <= max(8192 + 8192, DEMAND_BLOCK * 2, _cert_table_span(data))


def _cert_table_span(data: bytes) -> int:
    try:
        image = parse_pe(data)
    except Exception:  # noqa: BLE001 - not a PE: no table
        return 0
    return image.cert_table_size + 2 * DEMAND_BLOCK


def test_catalog_signed_file_through_a_source(fixture_trust: object, small_chunks: None) -> None:
    with CatalogIndex.open([str(FIXTURES)], cache_path=":memory:") as index:
        options = VerifyOptions(
            trust=fixture_trust,  # type: ignore[arg-type]
            catalogs=index,
            at=AT,
        )
        for name in ("cat_member_t64.exe", "cat_member_t64_tampered.exe", "fixtures.cat"):
            data = (FIXTURES / name).read_bytes()
            expected = verify_bytes(data, options, path=name)
            got = verify_source(BufferSource(data), options, path=name)
            assert got.to_dict() == expected.to_dict()
    assert expected.status is Status.MALFORMED  # the .cat itself: not a PE, in no catalog


def test_parsers_read_only_their_slices(tmp_path: Path) -> None:
    """A PE with a 64 MiB section: parsing reads the header block and the certificate table,
    not the section."""
    path = tmp_path / "big.exe"
    _big_pe(path, 64 << 20, signed_with=None)
    with path.open("rb") as handle:
        source = CountingSource(FileObjectSource(handle, path.stat().st_size))
        with DemandImage.over(source) as demand:
            view = memoryview(demand)
            image = parse_pe(view)
            view.release()
            assert demand.filled == DEMAND_BLOCK
    assert image.sections[0].raw_size == 64 << 20
    assert source.reads == [(0, DEMAND_BLOCK)]


def test_a_short_read_is_an_os_error_not_a_verdict(tmp_path: Path) -> None:
    data = (FIXTURES / "t64_sha256_ph.exe").read_bytes()
    path = tmp_path / "cut.exe"
    path.write_bytes(data[: len(data) // 2])
    with path.open("rb") as handle:
        # The file system claims the full size (a damaged run list); the data ends early.
        source = FileObjectSource(handle, len(data))
        with pytest.raises(OSError, match="short read"):
            verify_source(source, VerifyOptions())


def test_streamed_hashes_reject_a_size_mismatch() -> None:
    data = (FIXTURES / "t64_sha256.exe").read_bytes()
    image = parse_pe(data)
    with pytest.raises(MalformedImage):
        compute_hashes_streamed(BufferSource(data[:-8]), image, HashRequest(frozenset({"sha256"})))


def test_empty_source_is_malformed_like_empty_bytes() -> None:
    got = verify_source(BufferSource(b""), VerifyOptions(), path="x")
    assert got.to_dict() == verify_bytes(b"", VerifyOptions(), path="x").to_dict()


# -- a file of hundreds of MB, signed with page hashes by osslsigncode -------------------------

BIG = 200 << 20


def _big_pe(path: Path, section_size: int, signed_with: tuple[Path, Path] | None) -> None:
    """A PE32+ with one code section of ``section_size`` bytes, written sparse (zeros cost no
    disk), a few non-zero bytes per MiB so pages differ; signed with page hashes when a
    (certificate, key) pair is given."""
    base = FIXTURES / "t64_sha256.exe"
    head = bytearray(base.read_bytes()[:0x400])
    image = parse_pe(base.read_bytes())
    e = image.e_lfanew
    opt = e + 24
    # One section; no certificate table; SizeOfImage/SizeOfCode follow the section.
    head[e + 6 : e + 8] = (1).to_bytes(2, "little")
    table = opt + int.from_bytes(head[e + 20 : e + 22], "little")
    head[table : table + 40 * 8] = bytes(40 * 8)
    head[table : table + 8] = b".text\0\0\0"
    head[table + 8 : table + 12] = section_size.to_bytes(4, "little")  # VirtualSize
    head[table + 12 : table + 16] = (0x1000).to_bytes(4, "little")  # VirtualAddress
    head[table + 16 : table + 20] = section_size.to_bytes(4, "little")  # SizeOfRawData
    head[table + 20 : table + 24] = (0x400).to_bytes(4, "little")  # PointerToRawData
    head[table + 36 : table + 40] = (0x60000020).to_bytes(4, "little")  # code, exec, read
    head[opt + 4 : opt + 8] = section_size.to_bytes(4, "little")  # SizeOfCode
    head[opt + 56 : opt + 60] = (0x1000 + section_size).to_bytes(4, "little")  # SizeOfImage
    head[opt + 60 : opt + 64] = (0x400).to_bytes(4, "little")  # SizeOfHeaders
    head[opt + 16 : opt + 20] = (0x1000).to_bytes(4, "little")  # AddressOfEntryPoint
    rva_count_at = opt + 108
    dirs = rva_count_at + 4
    count = int.from_bytes(head[rva_count_at : rva_count_at + 4], "little")
    head[dirs : dirs + 8 * count] = bytes(8 * count)  # no imports, resources, relocations...
    unsigned = path.with_suffix(".unsigned") if signed_with else path
    with unsigned.open("wb") as out:
        out.write(head)
        for mib in range(0, section_size, 1 << 20):
            out.seek(0x400 + mib)
            out.write(hashlib.sha256(mib.to_bytes(8, "little")).digest())
        out.truncate(0x400 + section_size)
    if signed_with is not None:
        cert, key = signed_with
        subprocess.run(
            ["osslsigncode", "sign", "-certs", str(cert), "-key", str(key), "-h", "sha256",
             "-ph", "-in", str(unsigned), "-out", str(path)],
            check=True, capture_output=True,
        )  # fmt: skip
        unsigned.unlink()


def _signer(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "signer.pem", tmp_path / "signer.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=codeintegrity streamed-source test", "-addext",
         "extendedKeyUsage=codeSigning", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


# The growth of the peak resident set while one file is judged, in a fresh interpreter (the
# test process has already held much more). Imports and a first judgement come before.
_RSS_PROBE = """
import os, resource, sys
from codeintegrity.authenticode.trust import TrustStore
from codeintegrity.options import VerifyOptions
from codeintegrity.pe.source import FileDescriptorSource
from codeintegrity.verify import verify_bytes, verify_source
trust = TrustStore.from_paths([sys.argv[3]])
options = VerifyOptions(trust=trust, first_page_digests=frozenset({"sha256"}))
verify_bytes(open(sys.argv[2], "rb").read(), options)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
fd = os.open(sys.argv[1], os.O_RDONLY)
report = verify_source(FileDescriptorSource(fd), options)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) * 1024, report.status)
"""


@pytest.mark.skipif(shutil.which("osslsigncode") is None, reason="osslsigncode is not installed")
def test_a_large_file_is_judged_in_bounded_memory(tmp_path: Path) -> None:
    from codeintegrity.authenticode.trust import TrustStore

    path = tmp_path / "big.exe"
    cert, key = _signer(tmp_path)
    _big_pe(path, BIG, signed_with=(cert, key))
    size = path.stat().st_size
    assert size > BIG
    options = VerifyOptions(
        trust=TrustStore.from_paths([str(cert)]),
        at=datetime.now(UTC),
        first_page_digests=frozenset({"sha256"}),
    )
    fd = os.open(path, os.O_RDONLY)
    try:
        source = CountingSource(FileDescriptorSource(fd))
        streamed = verify_source(source, options, path="big.exe")
    finally:
        os.close(fd)
    chunk = hashing.STREAM_CHUNK_SIZE
    # No read larger than a chunk and its look-ahead page; about one pass over the file.
    assert source.largest <= chunk + 8192
    assert sum(n for _o, n in source.reads) < size + size // 50
    # The same verdict and digests as mapping the whole file.
    mapped = verify_path(path, options)
    assert streamed.to_dict() == {**mapped.to_dict(), "path": "big.exe"}
    (sig,) = streamed.signatures
    assert sig.image_hash is Check.VALID and sig.page_hashes is Check.VALID
    assert sig.page_hash_algorithm == "sha256"

    # Resident memory grows by the chunks and the signature's page-hash table (36 bytes per
    # 4 KiB page, parsed: a few % of the file), not by the file: reading it whole would add
    # its 200 MiB.
    probe = subprocess.run(
        [sys.executable, "-c", _RSS_PROBE, str(path), str(FIXTURES / "t64_sha256.exe"), str(cert)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    grown, status = probe.stdout.split()
    assert status == streamed.status.value == "valid"
    assert int(grown) < 4 * chunk + size // 10, f"peak RSS grew by {int(grown) >> 20} MiB"


def test_streamed_hashes_equal_in_memory_hashes_across_chunk_seams(tmp_path: Path) -> None:
    """Sections at 512-byte file offsets: pages straddle every chunk seam."""
    path = tmp_path / "mid.exe"
    _big_pe(path, 3 << 20, signed_with=None)
    data = path.read_bytes()
    image = parse_pe(data)
    from codeintegrity.pe.pagehash import PageHashTable

    offsets = (0, *range(0x400, len(data), 4096))
    table = PageHashTable("sha256", offsets, (), len(data))
    request = HashRequest(
        frozenset({"sha1", "sha256"}),
        page_tables=(table,),
        first_page=frozenset({"sha256"}),
        flat=frozenset({"md5"}),
    )
    expected = compute_hashes(data, image, request)
    for chunk in (8192, 65536, 1 << 20):
        source = CountingSource(BufferSource(data))
        assert compute_hashes_streamed(source, image, request, chunk_size=chunk) == expected
        assert source.largest <= chunk + 8192


def test_certificate_table_padding_is_read_like_the_whole_file(
    small_chunks: None, demand_block: int
) -> None:
    """Non-zero bytes after the last entry, up to the table's end: the table parser reads them
    through plain views, so the whole table must have been read in."""
    data = bytearray((FIXTURES / "t64_sha256.exe").read_bytes())
    image = parse_pe(bytes(data))
    assert (
        image.certdir_offset is not None
        and image.cert_table_offset + image.cert_table_size == len(data)
    )
    # Zeros first (the parser's one Reader read past the entry sees them), then non-zero bytes
    # in blocks nothing but the padding check looks at.
    junk = bytes(1024) + bytes(range(1, 256)) * 8
    data += junk
    size_at = image.certdir_offset + 4
    data[size_at : size_at + 4] = (image.cert_table_size + len(junk)).to_bytes(4, "little")
    options = VerifyOptions(at=AT)
    expected = verify_bytes(bytes(data), options, path="padded.exe")
    assert any("non-zero bytes after the last entry" in f.detail for f in expected.findings)
    got = verify_source(BufferSource(bytes(data)), options, path="padded.exe")
    assert got.to_dict() == expected.to_dict()


class _FailingSource:
    """A source whose storage fails on [bad, bad_end) (a damaged run, a bad sector)."""

    def __init__(self, data: bytes, bad: int, bad_end: int) -> None:
        self.data, self.bad, self.bad_end = data, bad, bad_end

    @property
    def size(self) -> int:
        return len(self.data)

    def read(self, offset: int, length: int) -> bytes:
        if offset < self.bad_end and offset + length > self.bad:
            raise OSError(5, f"I/O error at {offset:#x}")
        return self.data[offset : offset + length]


# Bad ranges: the headers, the section data only the hashing pass reads (with 512-byte demand
# blocks nothing else touches it), the certificate table at the end.
@pytest.mark.parametrize(("bad", "bad_end"), [(0, 1), (0x2000, 0x2100), (-100, -1)])
def test_a_failing_read_anywhere_is_an_os_error(
    bad: int, bad_end: int, small_chunks: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whether the parsers' demand blocks or the hashing pass hit it, a storage error comes
    out as the OSError (the caller's "unreadable"), never a verdict or another exception."""
    monkeypatch.setattr(source_module, "DEMAND_BLOCK", 512)
    data = (FIXTURES / "t64_sha256_ph.exe").read_bytes()
    source = _FailingSource(data, bad % len(data), bad_end % len(data))
    with pytest.raises(OSError, match="I/O error"):
        verify_source(source, VerifyOptions())
