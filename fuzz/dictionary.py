"""Generate the libFuzzer dictionaries in ``fuzz/dict/`` (magic values of every format).

    python -m fuzz.dictionary          # rewrite fuzz/dict/*.dict

``binary.dict`` (PE, PKCS#7, catalogs): MZ and PE signatures, optional-header magics,
machine types, WIN_CERTIFICATE revision/type, ASN.1 tags and lengths, and the DER encoding of
every OID codeintegrity knows (taken from the code, so new OIDs join the dictionary).
``wdac.dict``, ``policy.dict``, ``loldrivers.dict``: the tokens of SiPolicy XML, our policy
TOML and the LOLDrivers CSV/JSON. A test checks the committed files match this generator.
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

DICT_DIR = Path(__file__).resolve().parent / "dict"
TARGET_DICTS = {
    "pe": "binary.dict",
    "verify": "binary.dict",
    "tamper": "binary.dict",
    "pkcs7": "binary.dict",
    "catalog": "binary.dict",
    "wdac": "wdac.dict",
    "policy": "policy.dict",
    "loldrivers": "loldrivers.dict",
}


def der_oid(dotted: str) -> bytes:
    parts = [int(p) for p in dotted.split(".")]
    body = bytearray()
    for number in [parts[0] * 40 + parts[1], *parts[2:]]:
        chunk = [number & 0x7F]
        number >>= 7
        while number:
            chunk.append(0x80 | (number & 0x7F))
            number >>= 7
        body += bytes(reversed(chunk))
    return bytes([0x06, len(body)]) + bytes(body)


def _oids() -> list[str]:
    from codeintegrity.authenticode import oids
    from codeintegrity.catalog import ctl

    found: set[str] = set()
    for module in (oids, ctl):
        for value in vars(module).values():
            if isinstance(value, str) and value[:1].isdigit() and "." in value:
                found.add(value)
            elif isinstance(value, dict):
                found |= {k for k in value if isinstance(k, str) and k[:1].isdigit()}
    return sorted(found)


def binary_entries() -> list[tuple[str, bytes]]:
    from codeintegrity.authenticode import oids

    out: list[tuple[str, bytes]] = [
        ("mz", b"MZ"),
        ("pe_signature", b"PE\x00\x00"),
        ("pe32_magic", struct.pack("<H", 0x10B)),
        ("pe32plus_magic", struct.pack("<H", 0x20B)),
        ("win_cert_rev2_pkcs", struct.pack("<HH", 0x0200, 0x0002)),
        ("page_hash_class_id", oids.PAGE_HASH_CLASS_ID),
        ("section_shared_write", struct.pack("<I", 0xD0000040)),
        ("dll_force_integrity", struct.pack("<H", 0x0080)),
        ("subsystem_native", struct.pack("<H", 1)),
        ("subsystem_efi_app", struct.pack("<H", 10)),
    ]
    for name, machine in (("i386", 0x14C), ("amd64", 0x8664), ("arm64", 0xAA64), ("ia64", 0x200)):
        out.append((f"machine_{name}", struct.pack("<H", machine)))
    tags = {
        "seq_long": b"\x30\x82",
        "seq_indef": b"\x30\x80",
        "set_long": b"\x31\x82",
        "ctx0_long": b"\xa0\x82",
        "ctx0_indef": b"\xa0\x80",
        "ctx1": b"\xa1",
        "ctx3": b"\xa3",
        "octet_long": b"\x04\x82",
        "integer_1": b"\x02\x01",
        "null": b"\x05\x00",
        "bmp_string": b"\x1e",
        "utc_time": b"\x17\x0d",
        "generalized_time": b"\x18\x0f",
        "bit_string": b"\x03\x02\x05\xa0",
        "boolean_true": b"\x01\x01\xff",
        "eoc": b"\x00\x00",
        "len_4byte": b"\x84\xff\xff\xff\xff",
        "len_8byte": b"\x88\x7f\xff\xff\xff\xff\xff\xff\xff",
    }
    out += [(f"asn1_{name}", value) for name, value in tags.items()]
    out += [(f"oid_{dotted.replace('.', '_')}", der_oid(dotted)) for dotted in _oids()]
    return out


WDAC_TOKENS = [
    '<?xml version="1.0" encoding="utf-16"?>',
    "<!DOCTYPE",
    "<!ENTITY",
    "&amp;",
    "&#x41;",
    'xmlns="urn:schemas-microsoft-com:sipolicy"',
    "<SiPolicy",
    "</SiPolicy>",
    "<Rules>",
    "<Rule><Option>",
    "Enabled:Audit Mode",
    "Enabled:UMCI",
    "Required:WHQL",
    "<FileRules>",
    '<Allow ID="',
    '<Deny ID="',
    ' FriendlyName="',
    ' Hash="',
    " Hash Page Sha256",
    " Hash Sha1",
    ' FileName="*"',
    ' AppIDs="',
    "<Signers>",
    '<Signer ID="',
    '<CertRoot Type="TBS" Value="',
    '<CertRoot Type="Wellknown"',
    '<CertPublisher Value="',
    '<CertEKU ID="',
    "<CertOemID",
    '<FileAttribRef RuleID="',
    "<EKUs>",
    '<EKU ID="',
    "<SigningScenarios>",
    '<SigningScenario Value="131"',
    '<SigningScenario Value="12"',
    "<ProductSigners>",
    "<AllowedSigners>",
    '<AllowedSigner SignerId="',
    "<DeniedSigners>",
    '<DeniedSigner SignerId="',
    "<FileRulesRef>",
    '<FileRuleRef RuleID="',
    "<PolicyID>",
    "<BasePolicyID>",
    "<Settings>",
    "<VersionEx>",
    "\xff\xfe",
    "\xfe\xff",
    "\xef\xbb\xbf",
    "010A2B0601040182370A0305",
    '<!DOCTYPE SiPolicy [<!ENTITY h "AB">]>',
    "&h;",
    # the same in UTF-16LE (expat detects BOM-less UTF-16 on its own)
    *(
        t.encode("utf-16-le").decode("latin-1")
        for t in ("<!DOCTYPE SiPolicy [", '<!ENTITY h "AB">]>', "&h;", "<?xml")
    ),
]
POLICY_TOKENS = [
    "name = ",
    "id = ",
    'mode = "audit"',
    'mode = "enforce"',
    "drivers_must_be_signed = ",
    'require_page_hashes = "drivers"',
    'min_digest = "sha256"',
    "[allow]",
    "[deny]",
    "[revocation]",
    "signers = [",
    "hashes = [",
    "page_hashes = [",
    "file_hashes = [",
    "crls = [",
    "disallowed = [",
    "{ tbs = ",
    "publisher = ",
    'eku = "1.3.6.1.5.5.7.3.3"',
    'scope = "kernel"',
    'scope = "user"',
    "{ hash = ",
    '"""',
    "'''",
    "[[",
    "]]",
    "\\u0000",
    "true",
    "false",
    "1979-05-27T07:32:00Z",
    "0x",
    "inf",
    "nan",
    '"' + "ab" * 20 + '"',
    '"' + "cd" * 32 + '"',
]
LOLDRIVERS_TOKENS = [
    '"Id"',
    '"Tags"',
    '"Category"',
    '"KnownVulnerableSamples"',
    '"Authentihash"',
    "KnownVulnerableSamples_SHA1",
    "KnownVulnerableSamples_SHA256",
    "KnownVulnerableSamples_MD5",
    "KnownVulnerableSamples_Authentihash_SHA1",
    "KnownVulnerableSamples_Authentihash_SHA256",
    "KnownVulnerableSamples_Authentihash_MD5",
    '"MD5"',
    '"SHA1"',
    '"SHA256"',
    '","',
    "\r\n",
    "[{",
    "}]",
    "null",
    '""',
    "\xef\xbb\xbf",
    "ab" * 20,
    "cd" * 32,
    "ef" * 16,
    "vulnerable driver",
    "malicious",
]


def _escape(value: bytes) -> str:
    out = []
    for byte in value:
        char = chr(byte)
        if char in '"\\' or not (0x20 <= byte < 0x7F):
            out.append(f"\\x{byte:02X}")
        else:
            out.append(char)
    return "".join(out)


def render(entries: list[tuple[str, bytes]], title: str) -> str:
    lines = [f"# {title}", "# Generated by `python -m fuzz.dictionary`; do not edit by hand."]
    lines += [f'{name}="{_escape(value)}"' for name, value in entries]
    return "\n".join(lines) + "\n"


def _tokens(tokens: list[str], prefix: str) -> list[tuple[str, bytes]]:
    return [(f"{prefix}_{i}", t.encode("latin-1")) for i, t in enumerate(tokens)]


def files() -> dict[str, str]:
    return {
        "binary.dict": render(binary_entries(), "PE, PKCS#7/Authenticode and catalog magic values"),
        "wdac.dict": render(_tokens(WDAC_TOKENS, "wdac"), "SiPolicy XML tokens"),
        "policy.dict": render(_tokens(POLICY_TOKENS, "toml"), "policy TOML keys and values"),
        "loldrivers.dict": render(_tokens(LOLDRIVERS_TOKENS, "lol"), "LOLDrivers CSV/JSON tokens"),
    }


def main() -> int:
    DICT_DIR.mkdir(exist_ok=True)
    for name, text in files().items():
        (DICT_DIR / name).write_text(text, encoding="ascii")
        print(f"wrote {DICT_DIR / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
