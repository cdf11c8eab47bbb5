"""The attribute certificate table: every WIN_CERTIFICATE entry, and what is wrong with it.

Table problems are findings, not exceptions: a malformed table still leaves the engine a file
to report on (status ``malformed`` or ``invalid``), and a table that is merely padded or not at
the end of the file still carries signatures worth checking.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import MalformedSignature
from ..findings import Finding, FindingCode
from ..limits import DEFAULT_LIMITS, Limits
from ..reader import Reader
from .layout import PEImage

WIN_CERT_REVISION_2_0 = 0x0200
WIN_CERT_TYPE_PKCS_SIGNED_DATA = 0x0002
_HEADER = 8  # dwLength u32, wRevision u16, wCertificateType u16


@dataclass(frozen=True, slots=True)
class CertEntry:
    """One WIN_CERTIFICATE. ``data`` is the exact outer DER TLV of bCertificate for
    PKCS_SIGNED_DATA entries (the raw bCertificate for any other kind); ``trailing`` counts the
    bytes after it that are non-zero or beyond what 8-byte alignment explains."""

    index: int
    offset: int
    length: int
    revision: int
    cert_type: int
    data: bytes
    trailing: int

    @property
    def is_signature(self) -> bool:
        return (
            self.revision == WIN_CERT_REVISION_2_0
            and self.cert_type == WIN_CERT_TYPE_PKCS_SIGNED_DATA
        )


@dataclass(frozen=True, slots=True)
class CertTable:
    present: bool
    malformed: bool
    entries: tuple[CertEntry, ...]
    findings: tuple[Finding, ...]

    @property
    def signatures(self) -> tuple[CertEntry, ...]:
        """The entries that hold Authenticode signatures, in table order."""
        return tuple(e for e in self.entries if e.is_signature)


def align8(n: int) -> int:
    """``n`` rounded up to a multiple of 8 (signify#19: ``(8 - n % 8) % 8``, never +8)."""
    return n + (8 - n % 8) % 8


def der_tlv_length(r: Reader, at: int, limit: int) -> int:
    """Total length (tag + length + value) of the DER SEQUENCE at ``at``; must end by ``limit``.

    Raises MalformedSignature (through ``r``) for a wrong tag, an indefinite or oversized length,
    or a value that runs past ``limit``.
    """
    tag = r.u8(at, "bCertificate tag")
    if tag != 0x30:
        raise r.fail(at, "bCertificate tag", f"{tag:#04x} is not a DER SEQUENCE")
    first = r.u8(at + 1, "bCertificate length")
    if first < 0x80:
        header, length = 2, first
    elif first == 0x80:
        raise r.fail(at + 1, "bCertificate length", "indefinite length is not DER")
    else:
        count = first & 0x7F
        if count > 4:
            raise r.fail(at + 1, "bCertificate length", f"{count}-byte length field")
        length = int.from_bytes(r.bytes(at + 2, count, "bCertificate length"), "big")
        header = 2 + count
    if at + header + length > limit:
        raise r.fail(
            at, "bCertificate", f"DER length {header + length} runs past the entry end {limit:#x}"
        )
    return header + length


def parse_cert_table(
    data: bytes | bytearray | memoryview, image: PEImage, limits: Limits = DEFAULT_LIMITS
) -> CertTable:
    """Walk every WIN_CERTIFICATE of the table the data directory names. Never raises for table
    problems: they come back as findings, ``malformed`` set when the table cannot be trusted."""
    if not image.has_cert_table:
        return CertTable(present=False, malformed=False, entries=(), findings=())
    r = Reader(data, MalformedSignature)
    start, size = image.cert_table_offset, image.cert_table_size
    file_size = len(r)
    findings: list[Finding] = []

    def bad(offset: int | None, detail: str) -> CertTable:
        findings.append(Finding(FindingCode.CERT_TABLE_MALFORMED, detail, offset=offset))
        return CertTable(True, True, tuple(entries), tuple(findings))

    entries: list[CertEntry] = []
    if size > limits.max_cert_table_size:
        return bad(start, f"table size {size} exceeds the limit {limits.max_cert_table_size}")
    if start >= file_size or start + size > file_size:
        return bad(
            start,
            f"table [{start:#x}, {start + size:#x}) runs past the end of the file {file_size:#x}",
        )
    if start < image.raw_data_end:
        return bad(
            start,
            f"table starts at {start:#x}, inside the headers or section data "
            f"(which end at {image.raw_data_end:#x})",
        )
    if start + size != file_size:
        findings.append(
            Finding(
                FindingCode.CERT_TABLE_NOT_AT_END,
                f"{file_size - start - size} bytes follow the table that ends at {start + size:#x}",
                offset=start + size,
            )
        )

    end = start + size
    pos = start
    while pos < end:
        if len(entries) >= limits.max_cert_entries:
            return bad(pos, f"more than {limits.max_cert_entries} entries")
        entry_or_error = _read_entry(r, pos, end, len(entries))
        if isinstance(entry_or_error, str):
            if not entries:
                return bad(pos, entry_or_error)
            # Bytes after a valid entry that do not form one: padding or smuggled data
            # (CVE-2013-3900 shape); Windows accepts them unless EnableCertPaddingCheck is set.
            break
        entry = entry_or_error
        entries.append(entry)
        findings.extend(_entry_findings(r, entry, end))
        pos += align8(entry.length)
    if pos < end:
        extra = r.view[pos:end]
        kind = "zero" if not any(extra) else "non-zero"
        findings.append(
            Finding(
                FindingCode.CERT_TABLE_PADDING,
                f"directory Size leaves {end - pos} {kind} bytes after the last entry",
                offset=pos,
            )
        )
    return CertTable(True, False, tuple(entries), tuple(findings))


def _read_entry(r: Reader, pos: int, end: int, index: int) -> CertEntry | str:
    """The entry at ``pos``, or a one-line reason why there is none."""
    if end - pos < _HEADER:
        return f"{end - pos} bytes left, too few for a WIN_CERTIFICATE header"
    length = r.u32(pos, "dwLength")
    revision = r.u16(pos + 4, "wRevision")
    cert_type = r.u16(pos + 6, "wCertificateType")
    if length < _HEADER:
        return f"dwLength {length} is smaller than the 8-byte header"
    if pos + length > end:
        return f"dwLength {length} runs past the table end {end:#x}"
    body = pos + _HEADER
    if revision != WIN_CERT_REVISION_2_0 or cert_type != WIN_CERT_TYPE_PKCS_SIGNED_DATA:
        return CertEntry(
            index, pos, length, revision, cert_type, r.bytes(body, length - 8, "bCertificate"), 0
        )
    try:
        # A reader that ends with the entry: DER reads never run into the next entry.
        der_len = der_tlv_length(
            Reader(r.view[: pos + length], MalformedSignature), body, pos + length
        )
    except MalformedSignature as exc:
        return exc.diagnostics()
    slack = length - _HEADER - der_len
    # Signers round dwLength up so the entry ends 8-aligned; zeros up to there are expected.
    expected = align8(_HEADER + der_len) - _HEADER - der_len
    tail = r.view[body + der_len : pos + length]
    trailing = slack if slack > expected or any(tail) else 0
    return CertEntry(
        index, pos, length, revision, cert_type, r.bytes(body, der_len, "bCertificate"), trailing
    )


def _entry_findings(r: Reader, entry: CertEntry, end: int) -> list[Finding]:
    findings: list[Finding] = []
    if not entry.is_signature:
        findings.append(
            Finding(
                FindingCode.CERT_ENTRY_UNSUPPORTED,
                f"entry {entry.index}: revision {entry.revision:#06x}, type "
                f"{entry.cert_type:#06x} is not a PKCS#7 Authenticode signature; ignored",
                offset=entry.offset,
            )
        )
        return findings
    if entry.trailing:
        findings.append(
            Finding(
                FindingCode.CERT_TABLE_PADDING,
                f"entry {entry.index}: dwLength {entry.length} leaves {entry.trailing} bytes "
                f"after the {len(entry.data)}-byte signature",
                offset=entry.offset + _HEADER + len(entry.data),
            )
        )
    gap = r.view[entry.offset + entry.length : min(entry.offset + align8(entry.length), end)]
    if any(gap):
        findings.append(
            Finding(
                FindingCode.CERT_TABLE_PADDING,
                f"entry {entry.index}: non-zero bytes in its 8-byte alignment padding",
                offset=entry.offset + entry.length,
            )
        )
    return findings
