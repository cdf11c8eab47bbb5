"""parse_cert_table on every fixture kind, on real samples and on hand-built tables."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from asn1crypto import cms

from codeintegrity.findings import FindingCode
from codeintegrity.limits import Limits
from codeintegrity.pe.certtable import CertTable, align8, parse_cert_table
from codeintegrity.pe.layout import parse_pe
from tests.conftest import DATA, FIXTURES, SAMPLES

from .oracle import ids, signed_files

BASE = DATA / "fixtures_base" / "distlib_t64.exe"  # unsigned, length a multiple of 8
SIGNED = FIXTURES / "t64_sha256.exe"
# Fixtures whose table is deliberately wrong; every other signed file must give no finding.
TABLE_FIXTURES = {
    "bad_append_after_cert.exe",
    "q_pad_certdir.exe",
    "q_pad_wincert.exe",
    "bad_truncate_cert.exe",
}
CLEAN = [p for p in signed_files() if p.name not in TABLE_FIXTURES]


def table_of(path: Path) -> CertTable:
    data = path.read_bytes()
    return parse_cert_table(data, parse_pe(data))


def codes(table: CertTable) -> list[FindingCode]:
    return [f.code for f in table.findings]


def signature_der() -> bytes:
    return table_of(SIGNED).entries[0].data


def entry(body: bytes, revision: int = 0x0200, cert_type: int = 2, length: int | None = None):
    """A WIN_CERTIFICATE with ``body``, padded with zeros to 8 bytes."""
    n = 8 + len(body) if length is None else length
    raw = struct.pack("<IHH", n, revision, cert_type) + body
    return raw + bytes(align8(len(raw)) - len(raw))


def with_table(table: bytes, *, size: int | None = None, offset: int | None = None) -> bytes:
    """The unsigned base file with ``table`` appended and the directory pointing at it."""
    base = bytearray(BASE.read_bytes())
    image = parse_pe(bytes(base))
    assert image.certdir_offset is not None
    at = len(base) if offset is None else offset
    struct.pack_into("<II", base, image.certdir_offset, at, len(table) if size is None else size)
    return bytes(base) + table


def parse(data: bytes, limits: Limits | None = None) -> CertTable:
    return parse_cert_table(data, parse_pe(data), *(limits,) if limits else ())


# --- the fixtures -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", CLEAN, ids=ids(CLEAN))
def test_no_false_findings_on_signed_files(path: Path) -> None:
    table = table_of(path)
    assert table.present and not table.malformed
    assert table.findings == ()
    assert table.signatures
    for e in table.entries:
        # data is exactly one DER ContentInfo, and dwLength only adds alignment padding.
        assert cms.ContentInfo.load(e.data).dump(force=False) == e.data
        assert e.trailing == 0
        assert 0 <= e.length - 8 - len(e.data) < 8


def test_two_entries_in_shim() -> None:
    shim = SAMPLES / "signed/deb__shim-signed_1.51~1+deb12u1+16.1-2~deb12u1_amd64"
    table = table_of(shim / "shimx64.efi.signed")
    assert [e.index for e in table.signatures] == [0, 1]
    assert table.entries[1].offset == table.entries[0].offset + align8(table.entries[0].length)


def test_not_at_end() -> None:
    table = table_of(FIXTURES / "bad_append_after_cert.exe")
    assert codes(table) == [FindingCode.CERT_TABLE_NOT_AT_END]
    assert not table.malformed and len(table.signatures) == 1
    data = (FIXTURES / "bad_append_after_cert.exe").read_bytes()
    image = parse_pe(data)
    assert table.findings[0].offset == image.cert_table_offset + image.cert_table_size
    assert len(data) - table.findings[0].offset == 512


def test_padding_after_the_entry_in_the_directory_size() -> None:
    table = table_of(FIXTURES / "q_pad_certdir.exe")
    assert codes(table) == [FindingCode.CERT_TABLE_PADDING]
    assert not table.malformed and len(table.signatures) == 1
    e = table.entries[0]
    assert table.findings[0].offset == e.offset + align8(e.length)


def test_padding_inside_dwlength() -> None:
    table = table_of(FIXTURES / "q_pad_wincert.exe")
    assert codes(table) == [FindingCode.CERT_TABLE_PADDING]
    e = table.entries[0]
    assert e.trailing == e.length - 8 - len(e.data) == 16
    assert table.findings[0].offset == e.offset + 8 + len(e.data)
    # The signature itself is the same one the unpadded file carries.
    assert e.data == table_of(FIXTURES / "t64_sha256_ph.exe").entries[0].data


def test_truncated_table_is_malformed() -> None:
    table = table_of(FIXTURES / "bad_truncate_cert.exe")
    assert table.present and table.malformed
    assert codes(table) == [FindingCode.CERT_TABLE_MALFORMED]
    assert table.findings[0].offset == 0x1A600


@pytest.mark.parametrize("name", ["unsigned_removed.exe", "unsigned_zero_secdir.exe"])
def test_no_table(name: str) -> None:
    table = table_of(FIXTURES / name)
    assert table == CertTable(present=False, malformed=False, entries=(), findings=())


def test_findings_are_warnings_or_errors_with_offsets() -> None:
    for name in TABLE_FIXTURES:
        for finding in table_of(FIXTURES / name).findings:
            assert finding.offset is not None and finding.detail


# --- hand-built tables ------------------------------------------------------------------------


def test_hand_built_table_round_trip() -> None:
    der = signature_der()
    table = parse(with_table(entry(der)))
    assert table.findings == () and table.entries[0].data == der


def test_unsupported_entry_after_a_signature_is_a_warning() -> None:
    der = signature_der()
    table = parse(with_table(entry(der) + entry(b"<xml>junk</xml>", revision=0x0100, cert_type=1)))
    assert codes(table) == [FindingCode.CERT_ENTRY_UNSUPPORTED]
    assert not table.malformed and len(table.entries) == 2 and len(table.signatures) == 1
    assert table.entries[1].data == b"<xml>junk</xml>"


def test_junk_after_a_signature_is_padding_not_malformed() -> None:
    # signify#17: text after a valid first entry that does not even parse as a header.
    der = signature_der()
    table = parse(with_table(entry(der) + b'<?xml version="1.0"?>\n\0\0\0'))
    assert codes(table) == [FindingCode.CERT_TABLE_PADDING]
    assert "non-zero" in table.findings[0].detail and not table.malformed


def test_non_zero_alignment_padding_is_reported() -> None:
    der = signature_der()
    raw = bytearray(entry(der))
    assert len(raw) > 8 + len(der), "the test signature must need alignment padding"
    raw[-1] = 0x41
    table = parse(with_table(bytes(raw)))
    assert codes(table) == [FindingCode.CERT_TABLE_PADDING]


def test_alignment_padding_inside_dwlength_is_not_reported() -> None:
    der = signature_der()
    table = parse(with_table(entry(der, length=align8(8 + len(der)))))
    assert table.findings == () and table.entries[0].trailing == 0


@pytest.mark.parametrize(
    ("table_bytes", "why"),
    [
        (struct.pack("<IHH", 4, 0x200, 2) + bytes(8), "smaller than"),
        (struct.pack("<IHH", 4096, 0x200, 2) + bytes(8), "past the table"),
        (entry(b"\x31\x03\x02\x01\x00"), "not a DER SEQUENCE"),
        (entry(b"\x30\x80\x02\x01\x00\x00\x00"), "indefinite"),
        (entry(b"\x30\x85\x01\x00\x00\x00\x00\x00"), "length field"),
        (entry(b"\x30\x82\x10\x00\x02\x01\x00"), "runs past"),
        (entry(b"\x30"), "bCertificate length"),
        (b"\x01\x02\x03", "too few"),
    ],
)
def test_malformed_first_entry(table_bytes: bytes, why: str) -> None:
    table = parse(with_table(table_bytes))
    assert table.malformed and codes(table) == [FindingCode.CERT_TABLE_MALFORMED]
    assert why in table.findings[0].detail
    assert table.findings[0].offset is not None


def test_table_inside_section_data_is_malformed() -> None:
    der = signature_der()
    data = with_table(entry(der), offset=0x1000)
    table = parse(data)
    assert table.malformed and "inside the headers or section data" in table.findings[0].detail


def test_table_past_eof_and_over_the_size_limit() -> None:
    der = signature_der()
    assert parse(with_table(entry(der), size=len(entry(der)) + 8)).malformed
    assert parse(with_table(b"", offset=10**9, size=8)).malformed
    limited = parse(with_table(entry(der)), Limits(max_cert_table_size=64))
    assert limited.malformed and "limit" in limited.findings[0].detail


def test_entry_count_limit() -> None:
    der = signature_der()
    data = with_table(entry(der) + entry(der) + entry(der))
    assert len(parse(data).signatures) == 3
    table = parse(data, Limits(max_cert_entries=2))
    assert table.malformed and len(table.entries) == 2
    assert "more than 2 entries" in table.findings[-1].detail


def test_zero_length_entries_cannot_loop() -> None:
    # signify#3: a zero dwLength must not stall the walk.
    der = signature_der()
    table = parse(with_table(entry(der) + bytes(4096)))
    assert codes(table) == [FindingCode.CERT_TABLE_PADDING]
    assert "zero bytes" in table.findings[0].detail
