"""Independent reading of what a signature signed, with asn1crypto (test oracle only).

Extracts the image digest (the DigestInfo of SpcIndirectDataContent) and the page-hash table
(SpcPeImageData.file -> [1] SpcSerializedObject -> serializedData) of the primary signature and of
every nested one, without using any codeintegrity code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from asn1crypto import algos, cms, core, parser

from tests.conftest import FIXTURES, SAMPLES, SIGNIFY

NESTED_SIGNATURE_OID = "1.3.6.1.4.1.311.2.4.1"
PAGE_HASH_OIDS = {"1.3.6.1.4.1.311.2.3.1": "sha1", "1.3.6.1.4.1.311.2.3.2": "sha256"}
PAGE_HASH_CLASS_ID = bytes.fromhex("a6b586d5b4a12466ae05a217da8e60d6")


@dataclass(frozen=True)
class SignedImage:
    digest_algorithm: str
    digest: bytes
    page_hash_algorithm: str | None
    page_hash_raw: bytes | None


Tlv = tuple[int, int, int, bytes, bytes]  # class, method, tag, header, contents


def _children(contents: bytes) -> list[Tlv]:
    """The TLVs inside the contents of a constructed value."""
    out = []
    pos = 0
    while pos < len(contents):
        cls, method, tag, header, body, trailer = parser.parse(contents[pos:], strict=False)
        out.append((cls, method, tag, header, body))
        pos += len(header) + len(body) + len(trailer)
    return out


def _page_hashes(pe_image_data: bytes) -> tuple[str | None, bytes | None]:
    for cls, _, tag, _, body in _children(pe_image_data):
        if cls != 2 or tag != 0:  # file [0] EXPLICIT SpcLink
            continue
        ((_, _, link_tag, _, link),) = _children(body)
        if link_tag != 1:  # moniker [1] IMPLICIT SpcSerializedObject
            return None, None
        (_, _, _, _, class_id), (_, _, _, _, serialized) = _children(link)
        assert class_id == PAGE_HASH_CLASS_ID
        # serializedData = SET { SEQUENCE { OID, SET { OCTET STRING table } } }
        ((_, _, _, _, attributes),) = _children(serialized)
        for _, _, _, _, attribute in _children(attributes):
            (_, _, _, oid_header, oid), (_, _, _, _, values) = _children(attribute)
            dotted = core.ObjectIdentifier.load(oid_header + oid).dotted
            ((_, _, _, _, table),) = _children(values)
            if dotted in PAGE_HASH_OIDS:
                return PAGE_HASH_OIDS[dotted], table
    return None, None


def signed_images(der: bytes) -> list[SignedImage]:
    """The primary signature of a WIN_CERTIFICATE and its nested ones, depth first."""
    info = cms.ContentInfo.load(der)
    signed_data = info["content"]
    indirect = signed_data["encap_content_info"]["content"].parsed
    data, digest_info = indirect[0], indirect[1]
    algorithm = algos.DigestAlgorithm.load(digest_info[0].dump())["algorithm"].native
    page_algorithm, page_raw = (None, None)
    if len(data) > 1:
        page_algorithm, page_raw = _page_hashes(data[1].contents)
    out = [SignedImage(algorithm, digest_info[1].native, page_algorithm, page_raw)]
    for signer in signed_data["signer_infos"]:
        for attribute in signer["unsigned_attrs"] or []:
            if attribute["type"].dotted == NESTED_SIGNATURE_OID:
                for nested in attribute["values"]:
                    out += signed_images(nested.dump())
    return out


# --- files ----------------------------------------------------------------------------------

PE_SUFFIXES = (".exe", ".dll", ".sys", ".efi", ".pyd", ".signed")


def pe_files(folder: Path) -> list[Path]:
    """Every PE-looking file under ``folder``, sorted."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name.endswith(PE_SUFFIXES))


def signed_files() -> list[Path]:
    """Every fixture and sample carrying an embedded signature (by the directory entry)."""
    out = []
    for path in [*pe_files(FIXTURES), *pe_files(SAMPLES), *pe_files(SIGNIFY)]:
        data = path.read_bytes()
        lfanew = int.from_bytes(data[0x3C:0x40], "little")
        pe32_plus = data[lfanew + 24 : lfanew + 26] == b"\x0b\x02"
        certdir = lfanew + (168 if pe32_plus else 152)
        if int.from_bytes(data[certdir + 4 : certdir + 8], "little"):
            out.append(path)
    return out


def ids(paths: list[Path]) -> list[str]:
    return [p.name for p in paths]
