"""PE/COFF headers, section table and the certificate-table data directory.

Only what Code Integrity needs is parsed: the offsets the Authenticode hash excludes (CheckSum and
the certificate-table directory entry), the certificate table location, the sections (for page
hashes and the 6410 shared+writable rule) and the flags that decide which rules apply (Subsystem,
DllCharacteristics). Every read goes through :class:`~codeintegrity.reader.Reader`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import MalformedImage, NotAPEFile
from ..limits import DEFAULT_LIMITS, Limits
from ..reader import Reader
from ..report import ImageInfo

PE32_MAGIC = 0x10B
PE32_PLUS_MAGIC = 0x20B

# Machines whose architecture page is 8 KiB: IA64, Alpha, Alpha64 (authenticode.md 2.3).
_BIG_PAGE_MACHINES = frozenset({0x200, 0x184, 0x284})
# IMAGE_SUBSYSTEM_EFI_APPLICATION, _BOOT_SERVICE_DRIVER, _RUNTIME_DRIVER, _ROM, XBOX_CODE_CATALOG
# is 17; 16 is WINDOWS_BOOT_APPLICATION, treated as firmware-loaded too.
_EFI_SUBSYSTEMS = frozenset({10, 11, 12, 13, 16})
SUBSYSTEM_NATIVE = 1
DLLCHAR_FORCE_INTEGRITY = 0x0080
SCN_SHARED_WRITE = 0x90000000  # IMAGE_SCN_MEM_SHARED | IMAGE_SCN_MEM_WRITE

_SECTION_HEADER_SIZE = 40
_SYMBOL_SIZE = 18
_CERT_DIR_INDEX = 4
_MAX_LONG_NAME = 256


@dataclass(frozen=True, slots=True)
class Section:
    """One section table entry; ``raw_offset``/``raw_size`` are file positions."""

    index: int
    name: str
    virtual_size: int
    virtual_address: int
    raw_size: int
    raw_offset: int
    characteristics: int

    @property
    def raw_end(self) -> int:
        return self.raw_offset + self.raw_size

    @property
    def shared_writable(self) -> bool:
        return (self.characteristics & SCN_SHARED_WRITE) == SCN_SHARED_WRITE


@dataclass(frozen=True, slots=True)
class PEImage:
    """The parsed headers of one PE image. Offsets are file offsets."""

    size: int
    e_lfanew: int
    machine: int
    number_of_sections: int
    characteristics: int
    pe32_plus: bool
    subsystem: int
    dll_characteristics: int
    size_of_headers: int
    section_alignment: int
    file_alignment: int
    checksum: int
    checksum_offset: int
    certdir_offset: int | None  # the 8-byte directory entry; None when it does not exist
    cert_table_offset: int
    cert_table_size: int
    sections: tuple[Section, ...]

    @property
    def page_size(self) -> int:
        return 8192 if self.machine in _BIG_PAGE_MACHINES else 4096

    @property
    def is_efi(self) -> bool:
        return self.subsystem in _EFI_SUBSYSTEMS

    @property
    def is_kernel_driver(self) -> bool:
        return self.subsystem == SUBSYSTEM_NATIVE

    @property
    def force_integrity(self) -> bool:
        return bool(self.dll_characteristics & DLLCHAR_FORCE_INTEGRITY)

    @property
    def shared_writable_sections(self) -> tuple[Section, ...]:
        return tuple(s for s in self.sections if s.shared_writable)

    @property
    def has_cert_table(self) -> bool:
        """The directory names a table (non-zero offset and size), whether or not it is valid."""
        return self.cert_table_offset != 0 and self.cert_table_size != 0

    @property
    def hash_end(self) -> int:
        """Where the Authenticode hash stops: the table start (clamped to EOF), else EOF."""
        if self.has_cert_table:
            return min(self.cert_table_offset, self.size)
        return self.size

    @property
    def truncated_sections(self) -> tuple[Section, ...]:
        """Sections whose raw data runs past the end of the file (not fatal for the hash)."""
        return tuple(s for s in self.sections if s.raw_size and s.raw_end > self.size)

    @property
    def raw_data_end(self) -> int:
        """End of the headers and of every section's raw data (may exceed the file size)."""
        ends = [s.raw_end for s in self.sections if s.raw_size]
        return max([self.size_of_headers, *ends])

    @property
    def excluded_ranges(self) -> tuple[tuple[int, int], ...]:
        """The header fields every Authenticode form leaves out, as sorted [start, end)."""
        ranges = [(self.checksum_offset, self.checksum_offset + 4)]
        if self.certdir_offset is not None:
            ranges.append((self.certdir_offset, self.certdir_offset + 8))
        return tuple(sorted(ranges))

    def section_at(self, offset: int) -> Section | None:
        """The section whose raw data holds ``offset`` (first match in table order)."""
        for section in self.sections:
            if section.raw_size and section.raw_offset <= offset < section.raw_end:
                return section
        return None

    def info(self) -> ImageInfo:
        return ImageInfo(
            machine=self.machine,
            pe32_plus=self.pe32_plus,
            subsystem=self.subsystem,
            characteristics=self.characteristics,
            dll_characteristics=self.dll_characteristics,
            is_kernel_driver=self.is_kernel_driver,
            is_efi=self.is_efi,
            force_integrity=self.force_integrity,
            sections=self.number_of_sections,
            size=self.size,
        )


def parse_pe(data: bytes | bytearray | memoryview, limits: Limits = DEFAULT_LIMITS) -> PEImage:
    """Parse the headers of a PE image; raises NotAPEFile or MalformedImage."""
    r = Reader(data, MalformedImage)
    size = len(r)
    if size < 2 or r.bytes(0, 2, "MZ signature") != b"MZ":
        raise NotAPEFile("no MZ signature: not a PE file")
    if size > limits.max_file_size:
        raise MalformedImage(
            None, "file size", f"{size} bytes exceeds the limit of {limits.max_file_size}"
        )
    e_lfanew = r.u32(0x3C, "e_lfanew")
    if e_lfanew + 4 > size:
        raise MalformedImage(0x3C, "e_lfanew", f"{e_lfanew:#x} is outside the file")
    if r.bytes(e_lfanew, 4, "PE signature") != b"PE\0\0":
        raise NotAPEFile(f"no PE signature at {e_lfanew:#x}: not a PE file")

    coff = e_lfanew + 4
    r.require(coff, 20, "COFF header")
    machine = r.u16(coff, "Machine")
    nsections = r.u16(coff + 2, "NumberOfSections")
    symtab = r.u32(coff + 8, "PointerToSymbolTable")
    nsymbols = r.u32(coff + 12, "NumberOfSymbols")
    opt_size = r.u16(coff + 16, "SizeOfOptionalHeader")
    characteristics = r.u16(coff + 18, "Characteristics")
    if nsections > limits.max_sections:
        raise MalformedImage(
            coff + 2, "NumberOfSections", f"{nsections} exceeds the limit of {limits.max_sections}"
        )

    opt = coff + 20
    magic = r.u16(opt, "optional header Magic")
    if magic not in (PE32_MAGIC, PE32_PLUS_MAGIC):
        raise MalformedImage(opt, "optional header Magic", f"{magic:#x} is not PE32 or PE32+")
    pe32_plus = magic == PE32_PLUS_MAGIC
    rva_count_at = opt + (108 if pe32_plus else 92)
    r.require(opt, rva_count_at + 4 - opt, "optional header")
    section_alignment = r.u32(opt + 32, "SectionAlignment")
    file_alignment = r.u32(opt + 36, "FileAlignment")
    size_of_headers = r.u32(opt + 60, "SizeOfHeaders")
    checksum = r.u32(opt + 64, "CheckSum")
    subsystem = r.u16(opt + 68, "Subsystem")
    dll_characteristics = r.u16(opt + 70, "DllCharacteristics")
    rva_count = r.u32(rva_count_at, "NumberOfRvaAndSizes")

    certdir_offset: int | None = None
    cert_table_offset = cert_table_size = 0
    if rva_count > _CERT_DIR_INDEX:
        certdir_offset = rva_count_at + 4 + 8 * _CERT_DIR_INDEX
        # The directory's VirtualAddress is a file offset, not an RVA.
        cert_table_offset = r.u32(certdir_offset, "certificate table directory")
        cert_table_size = r.u32(certdir_offset + 4, "certificate table directory")

    table_at = opt + opt_size
    r.require(table_at, _SECTION_HEADER_SIZE * nsections, "section table")
    strtab = symtab + nsymbols * _SYMBOL_SIZE if symtab else None
    sections = tuple(
        _parse_section(r, i, table_at + i * _SECTION_HEADER_SIZE, strtab) for i in range(nsections)
    )
    return PEImage(
        size=size,
        e_lfanew=e_lfanew,
        machine=machine,
        number_of_sections=nsections,
        characteristics=characteristics,
        pe32_plus=pe32_plus,
        subsystem=subsystem,
        dll_characteristics=dll_characteristics,
        size_of_headers=size_of_headers,
        section_alignment=section_alignment,
        file_alignment=file_alignment,
        checksum=checksum,
        checksum_offset=opt + 64,
        certdir_offset=certdir_offset,
        cert_table_offset=cert_table_offset,
        cert_table_size=cert_table_size,
        sections=sections,
    )


def _parse_section(r: Reader, index: int, at: int, strtab: int | None) -> Section:
    raw_name = r.bytes(at, 8, "section Name").split(b"\0", 1)[0]
    name = raw_name.decode("latin-1")
    # bytes.isdigit is ASCII only ("/\xb2" is no offset, though "\xb2".isdigit() is true)
    if strtab is not None and name.startswith("/") and raw_name[1:].isdigit():
        name = _long_name(r, strtab + int(name[1:])) or name
    return Section(
        index=index,
        name=name,
        virtual_size=r.u32(at + 8, "section VirtualSize"),
        virtual_address=r.u32(at + 12, "section VirtualAddress"),
        raw_size=r.u32(at + 16, "section SizeOfRawData"),
        raw_offset=r.u32(at + 20, "section PointerToRawData"),
        characteristics=r.u32(at + 36, "section Characteristics"),
    )


def _long_name(r: Reader, at: int) -> str | None:
    """A COFF string-table name ("/NN"); None when it cannot be resolved (keep "/NN")."""
    if at < 0 or at >= len(r):
        return None
    raw = r.bytes(at, min(_MAX_LONG_NAME, len(r) - at), "section long name")
    end = raw.find(b"\0")
    if end <= 0:
        return None
    return raw[:end].decode("latin-1")


def pe_checksum(data: bytes | bytearray | memoryview, image: PEImage) -> int:
    """The optional-header CheckSum as ImageHlp's CheckSumMappedFile computes it.

    ImageHlp sums the little-endian 16-bit words of the whole file with end-around carry, takes
    the stored CheckSum's two halves back out with a one's-complement subtraction, and adds the
    file length. The folded sum is the total modulo 0xFFFF (0xFFFF standing for a non-zero
    multiple), and 0x10000**k == 1 (mod 0xFFFF), so each chunk read as one little-endian integer
    has the residue of the sum of its words: C code does the arithmetic, with no per-word Python
    loop and no copy of the whole file.
    """
    view = data if isinstance(data, memoryview) else memoryview(data)
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    size = len(view)
    total = 0
    any_nonzero = False
    step = 1 << 20  # even, so word boundaries stay aligned across chunks
    for start in range(0, size, step):
        value = int.from_bytes(view[start : start + step], "little")
        if value:
            any_nonzero = True
            total += value % 0xFFFF
    partial = total % 0xFFFF
    if partial == 0 and any_nonzero:
        partial = 0xFFFF  # the end-around carry never folds a non-zero sum to 0
    for half in (image.checksum & 0xFFFF, image.checksum >> 16):
        partial = partial - half if partial >= half else ((partial - half) & 0xFFFF) - 1
    return (partial + size) & 0xFFFFFFFF
