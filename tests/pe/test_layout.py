"""parse_pe on real files (PE32, PE32+, ARM64, EFI, drivers) and on broken headers."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from codeintegrity.errors import MalformedImage, NotAPEFile
from codeintegrity.limits import Limits
from codeintegrity.pe.layout import parse_pe, pe_checksum
from codeintegrity.report import ImageInfo
from tests.conftest import FIXTURES, SAMPLES, SIGNIFY

from .oracle import ids, pe_files

T64 = SAMPLES / "unsigned/pypi__distlib-0.4.4-py2.py3-none-any/t64.exe"
T64_ARM = SAMPLES / "unsigned/pypi__distlib-0.4.4-py2.py3-none-any/t64-arm.exe"
CLI32 = SAMPLES / "unsigned/pypi__setuptools-84.2.1-py3-none-any/cli-32.exe"
SHIM = SAMPLES / "signed/deb__shim-signed_1.51~1+deb12u1+16.1-2~deb12u1_amd64/shimx64.efi.signed"
WINDIVERT = SAMPLES / "signed/pypi__pydivert-4.0.1-py3-none-win_amd64/WinDivert64.sys"


def lfanew(data: bytes) -> int:
    return struct.unpack_from("<I", data, 0x3C)[0]


def patched(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


def test_pe32_plus_headers() -> None:
    data = T64.read_bytes()
    image = parse_pe(data)
    e = lfanew(data)
    assert image.e_lfanew == e
    assert image.machine == 0x8664 and image.pe32_plus
    assert image.size == len(data)
    assert image.checksum_offset == e + 88
    assert image.certdir_offset == e + 168
    assert image.checksum == struct.unpack_from("<I", data, e + 88)[0]
    assert (image.cert_table_offset, image.cert_table_size) == (0, 0)
    assert image.size_of_headers == 0x400
    assert image.subsystem == 3  # console
    assert [s.name for s in image.sections] == [
        ".text",
        ".rdata",
        ".data",
        ".pdata",
        ".rsrc",
        ".reloc",
    ]
    text = image.sections[0]
    assert text.index == 0 and text.raw_offset == 0x400 and text.raw_size > 0
    assert image.page_size == 4096
    assert not (image.is_efi or image.is_kernel_driver or image.force_integrity)
    assert image.shared_writable_sections == ()
    assert image.truncated_sections == ()


def test_pe32_headers_use_pe32_offsets() -> None:
    data = CLI32.read_bytes()
    image = parse_pe(data)
    e = lfanew(data)
    assert image.machine == 0x14C and not image.pe32_plus
    assert image.checksum_offset == e + 88
    assert image.certdir_offset == e + 152


def test_arm64() -> None:
    image = parse_pe(T64_ARM.read_bytes())
    assert image.machine == 0xAA64 and image.pe32_plus and image.page_size == 4096


def test_signed_fixture_names_its_certificate_table() -> None:
    data = (FIXTURES / "t64_sha256.exe").read_bytes()
    image = parse_pe(data)
    assert image.cert_table_offset == 0x1A600
    assert image.cert_table_offset + image.cert_table_size == len(data)
    assert image.has_cert_table and image.hash_end == 0x1A600


def test_efi_and_coff_long_section_name() -> None:
    data = SHIM.read_bytes()
    image = parse_pe(data)
    assert image.is_efi and image.subsystem == 10
    names = [s.name for s in image.sections]
    assert ".vendor_cert" in names
    # The name really is a "/NN" reference into the COFF string table in the file.
    index = names.index(".vendor_cert")
    header = image.e_lfanew + 24 + struct.unpack_from("<H", data, image.e_lfanew + 20)[0]
    raw = data[header + 40 * index : header + 40 * index + 8]
    assert raw.startswith(b"/") and raw[1:].rstrip(b"\0").isdigit()


def test_unresolvable_long_name_stays_as_written() -> None:
    data = SHIM.read_bytes()
    e = lfanew(data)
    broken = patched(data, e + 4 + 8, "<I", len(data) + 100)  # PointerToSymbolTable past EOF
    names = [s.name for s in parse_pe(broken).sections]
    assert any(n.startswith("/") and n[1:].isdigit() for n in names)


@pytest.mark.parametrize("path", [WINDIVERT, SIGNIFY / "pciide.sys"], ids=lambda p: p.name)
def test_kernel_drivers(path: Path) -> None:
    image = parse_pe(path.read_bytes())
    assert image.is_kernel_driver and image.subsystem == 1 and not image.is_efi


def test_shared_writable_section() -> None:
    image = parse_pe((FIXTURES / "t64_shared_writable_resigned.exe").read_bytes())
    assert [s.name for s in image.shared_writable_sections] == [".data"]
    assert image.shared_writable_sections[0].characteristics & 0x90000000 == 0x90000000


def test_force_integrity_flag() -> None:
    data = T64.read_bytes()
    at = lfanew(data) + 24 + 70
    flags = struct.unpack_from("<H", data, at)[0]
    image = parse_pe(patched(data, at, "<H", flags | 0x80))
    assert image.force_integrity and image.dll_characteristics == flags | 0x80


@pytest.mark.parametrize(("machine", "page"), [(0x200, 8192), (0x184, 8192), (0x284, 8192)])
def test_big_page_machines(machine: int, page: int) -> None:
    data = T64.read_bytes()
    assert parse_pe(patched(data, lfanew(data) + 4, "<H", machine)).page_size == page


def test_info() -> None:
    data = WINDIVERT.read_bytes()
    image = parse_pe(data)
    info = image.info()
    assert isinstance(info, ImageInfo)
    assert info.machine == 0x8664 and info.pe32_plus and info.is_kernel_driver
    assert info.sections == len(image.sections) == image.number_of_sections
    assert info.size == len(data) and not info.is_efi


def test_few_data_directories_means_no_certificate_directory() -> None:
    data = T64.read_bytes()
    image = parse_pe(patched(data, lfanew(data) + 24 + 108, "<I", 4))
    assert image.certdir_offset is None
    assert (image.cert_table_offset, image.cert_table_size) == (0, 0)
    assert image.excluded_ranges == ((image.checksum_offset, image.checksum_offset + 4),)


def test_section_past_eof_is_recorded_not_fatal() -> None:
    data = T64.read_bytes()[:0x1000]
    image = parse_pe(data)
    assert image.truncated_sections
    assert image.truncated_sections[0].name == ".text"


# --- malformed headers ------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"M", b"ZM" + bytes(200), b"\x7fELF" + bytes(100)])
def test_not_mz(data: bytes) -> None:
    with pytest.raises(NotAPEFile):
        parse_pe(data)


def test_no_pe_signature() -> None:
    data = T64.read_bytes()
    with pytest.raises(NotAPEFile):
        parse_pe(patched(data, lfanew(data), "<I", 0x12345678))


def test_mz_too_short_for_e_lfanew() -> None:
    with pytest.raises(MalformedImage) as info:
        parse_pe(b"MZ" + bytes(20))
    assert info.value.field == "e_lfanew"


def test_e_lfanew_out_of_range() -> None:
    data = T64.read_bytes()
    with pytest.raises(MalformedImage) as info:
        parse_pe(patched(data, 0x3C, "<I", len(data) - 2))
    assert info.value.offset == 0x3C and info.value.field == "e_lfanew"


def test_bad_optional_header_magic() -> None:
    data = T64.read_bytes()
    with pytest.raises(MalformedImage) as info:
        parse_pe(patched(data, lfanew(data) + 24, "<H", 0x107))  # ROM image
    assert "Magic" in info.value.field


def test_optional_header_past_eof() -> None:
    data = T64.read_bytes()
    with pytest.raises(MalformedImage):
        parse_pe(data[: lfanew(data) + 24 + 40])


def test_section_table_past_eof() -> None:
    data = T64.read_bytes()
    e = lfanew(data)
    table = e + 24 + struct.unpack_from("<H", data, e + 20)[0]
    with pytest.raises(MalformedImage) as info:
        parse_pe(data[: table + 40 * 3])
    assert info.value.field == "section table"


def test_too_many_sections() -> None:
    data = T64.read_bytes()
    with pytest.raises(MalformedImage) as info:
        parse_pe(data, Limits(max_sections=5))
    assert info.value.field == "NumberOfSections"
    with pytest.raises(MalformedImage):
        parse_pe(patched(data, lfanew(data) + 6, "<H", 0xFFFF))


def test_file_too_large() -> None:
    with pytest.raises(MalformedImage) as info:
        parse_pe(T64.read_bytes(), Limits(max_file_size=4096))
    assert info.value.field == "file size"


def test_errors_are_one_line() -> None:
    with pytest.raises(MalformedImage) as info:
        parse_pe(b"MZ" + bytes(20))
    assert "\n" not in info.value.diagnostics()


# --- CheckSum ---------------------------------------------------------------------------------


def reference_checksum(data: bytes, checksum_offset: int) -> int:
    """ImageHlp's CheckSumMappedFile written out word by word (slow, obviously right)."""
    padded = data + b"\0" if len(data) % 2 else data
    total = 0
    for (word,) in struct.iter_unpack("<H", padded):
        total += word
        total = (total & 0xFFFF) + (total >> 16)
    stored = struct.unpack_from("<I", data, checksum_offset)[0]
    for half in (stored & 0xFFFF, stored >> 16):
        total = total - half if total >= half else ((total - half) & 0xFFFF) - 1
    return (total + len(data)) & 0xFFFFFFFF


@pytest.mark.parametrize(
    "path",
    pe_files(SAMPLES / "signed") + pe_files(SIGNIFY),
    ids=ids(pe_files(SAMPLES / "signed") + pe_files(SIGNIFY)),
)
def test_checksum_matches_what_the_linker_stored(path: Path) -> None:
    data = path.read_bytes()
    image = parse_pe(data)
    assert image.checksum != 0
    assert pe_checksum(data, image) == image.checksum


@pytest.mark.parametrize("extra", [b"", b"\x01", b"\xff\xfe\x07"])
def test_checksum_matches_reference(extra: bytes) -> None:
    data = CLI32.read_bytes() + extra
    image = parse_pe(data)
    assert pe_checksum(data, image) == reference_checksum(data, image.checksum_offset)
    assert pe_checksum(memoryview(data), image) == pe_checksum(data, image)


def test_checksum_changed_only_in_the_field() -> None:
    good = (FIXTURES / "t64_sha256_ph.exe").read_bytes()
    flipped = (FIXTURES / "ok_flip_checksum.exe").read_bytes()
    image = parse_pe(flipped)
    assert image.checksum != parse_pe(good).checksum
    assert pe_checksum(flipped, image) == pe_checksum(good, parse_pe(good)) != image.checksum


def test_long_name_reference_with_a_non_ascii_digit_stays_as_written() -> None:
    # "/\xb2" decodes (latin-1) to "/²", and "²".isdigit() is true but int("²") raises: a name
    # that is no decimal offset must stay as written, never crash the parse.
    data = SHIM.read_bytes()
    image = parse_pe(data)
    index = [s.name for s in image.sections].index(".vendor_cert")
    header = image.e_lfanew + 24 + struct.unpack_from("<H", data, image.e_lfanew + 20)[0]
    at = header + 40 * index
    odd = data[:at] + b"/\xb2".ljust(8, b"\0") + data[at + 8 :]
    assert parse_pe(odd).sections[index].name == "/\xb2"
