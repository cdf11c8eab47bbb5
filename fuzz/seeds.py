"""Collect seed corpora for every target from ``tests/data`` (nothing is copied into fuzz/).

    python -m fuzz.seeds TARGET DIR      # write TARGET's seeds into DIR (one file each)

Large inputs are reduced rather than copied: the WDAC blocklist is cut to a few rules of each
kind (references to dropped rules removed), the LOLDrivers CSV to its header and a few rows
(plus the same rows as drivers.json), signatures are cut out of the signed files.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import struct
import sys
import xml.etree.ElementTree as ET  # noqa: S405 - our own test data, no DTD
from collections.abc import Callable, Iterator
from pathlib import Path

from .common import DATA, ROOT

MAX_PE_SEED = 128 * 1024  # larger files make every execution slower and add little
PE_SUFFIXES = {".exe", ".dll", ".efi", ".sys", ".signed"}
Seeds = list[tuple[str, bytes]]


def _pe_files(limit: int | None = MAX_PE_SEED) -> Iterator[Path]:
    for path in sorted(DATA.rglob("*")):
        if path.suffix.lower() in PE_SUFFIXES and path.is_file():
            if limit is None or path.stat().st_size <= limit:
                yield path


def pe_seeds() -> Seeds:
    return [(p.name, p.read_bytes()) for p in _pe_files()]


def pkcs7_seeds() -> Seeds:
    from codeintegrity.errors import CIError
    from codeintegrity.pe.certtable import parse_cert_table
    from codeintegrity.pe.layout import parse_pe

    out: Seeds = []
    for path in _pe_files(limit=None):
        data = path.read_bytes()
        try:
            entries = parse_cert_table(data, parse_pe(data)).entries
        except CIError:
            continue
        out += [(f"{path.name}.{e.index}.der", e.data) for e in entries if e.data]
    return out


def tamper_seeds() -> Seeds:
    from .targets.tamper import BASES

    out: Seeds = []
    # Positions are modulo each base's hashed size: the MZ magic, e_lfanew, the PE
    # signature area, the middle, the last hashed byte (0xFFFFFFFF wraps near the end).
    for base in range(len(BASES)):
        for position, mask in ((0, 1), (0x3C, 0x10), (0x80, 0xFF), (0x3000, 0x80)):
            out.append(
                (f"base{base}-{position:x}", bytes([base]) + struct.pack("<IB", position, mask))
            )
        two = struct.pack("<IB", 0x400, 0x01) + struct.pack("<IB", 0xFFFFFFFF, 0x20)
        out.append((f"base{base}-two", bytes([base]) + two))
    return out


def catalog_seeds() -> Seeds:
    return [(p.name, p.read_bytes()) for p in sorted(DATA.rglob("*.cat"))]


# A small SiPolicy that reaches what the blocklist does not: allowed signers with an EKU,
# user-mode scenario 12 (Enabled:UMCI), Audit Mode, page-hash and allow hash rules.
SMALL_SIPOLICY = """<?xml version="1.0" encoding="utf-8"?>
<SiPolicy xmlns="urn:schemas-microsoft-com:sipolicy" PolicyType="Base Policy">
  <VersionEx>10.0.0.1</VersionEx>
  <PolicyID>{0F1E2D3C-0000-4000-8000-000000000001}</PolicyID>
  <Rules><Rule><Option>Enabled:UMCI</Option></Rule>
    <Rule><Option>Enabled:Audit Mode</Option></Rule></Rules>
  <EKUs><EKU ID="ID_EKU_CS" Value="010A2B0601050507030300" /></EKUs>
  <FileRules>
    <Allow ID="ID_ALLOW_A" FriendlyName="a.exe Hash Sha256" Hash="{h64}" />
    <Deny ID="ID_DENY_B" FriendlyName="b.sys Hash Sha1" Hash="{h40}" />
    <Deny ID="ID_DENY_B_PAGE" FriendlyName="b.sys Hash Page Sha256" Hash="{h64}" />
  </FileRules>
  <Signers>
    <Signer ID="ID_SIGNER_CS" Name="Code Signing CA">
      <CertRoot Type="TBS" Value="{h64}" /><CertEKU ID="ID_EKU_CS" /></Signer>
    <Signer ID="ID_SIGNER_BAD" Name="Bad CA"><CertRoot Type="TBS" Value="{h40}" />
      <CertPublisher Value="Bad Corp" /></Signer>
  </Signers>
  <SigningScenarios>
    <SigningScenario Value="131" ID="ID_K" FriendlyName="kernel"><ProductSigners>
      <AllowedSigners><AllowedSigner SignerId="ID_SIGNER_CS" /></AllowedSigners>
      <DeniedSigners><DeniedSigner SignerId="ID_SIGNER_BAD" /></DeniedSigners>
      <FileRulesRef><FileRuleRef RuleID="ID_DENY_B" /><FileRuleRef RuleID="ID_DENY_B_PAGE" />
      </FileRulesRef></ProductSigners></SigningScenario>
    <SigningScenario Value="12" ID="ID_U" FriendlyName="user"><ProductSigners>
      <FileRulesRef><FileRuleRef RuleID="ID_ALLOW_A" /></FileRulesRef>
    </ProductSigners></SigningScenario>
  </SigningScenarios>
</SiPolicy>
""".replace("{h40}", "AB" * 20).replace("{h64}", "CD" * 32)

_REFERENCES = {"FileRuleRef": "RuleID", "AllowedSigner": "SignerId", "DeniedSigner": "SignerId"}


def reduced_blocklist(keep: int = 6) -> bytes:
    """Microsoft's driver blocklist with ``keep`` rules of each list, references pruned."""
    ns = "urn:schemas-microsoft-com:sipolicy"
    ET.register_namespace("", ns)
    path = DATA / "policy" / "microsoft-driver-blocklist-SiPolicy.xml"
    root = ET.fromstring(path.read_bytes())  # noqa: S314 - the project's own test data
    kept: set[str] = set()
    for name in ("FileRules", "Signers"):
        parent = root.find(f"{{{ns}}}{name}")
        if parent is None:
            continue
        children = list(parent)
        # Keep a mix: the first rules and some from the end (signers with publishers).
        chosen = children[:keep] + children[-keep:]
        for child in children:
            if child in chosen:
                kept.add(child.get("ID", ""))
            else:
                parent.remove(child)
    for parent in root.iter():
        for child in list(parent):
            tag = child.tag.rsplit("}", 1)[-1]
            attribute = _REFERENCES.get(tag) or ("RuleID" if tag == "FileAttribRef" else None)
            if attribute and child.get(attribute) not in kept:
                parent.remove(child)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def wdac_seeds() -> Seeds:
    reduced = reduced_blocklist()
    return [
        ("blocklist-reduced.xml", reduced),
        ("blocklist-reduced-utf16.xml", reduced.decode().encode("utf-16")),
        # expat detects UTF-16 without a byte-order mark by itself: a real input shape.
        ("blocklist-reduced-utf16le.xml", reduced.decode().encode("utf-16-le")),
        ("small.xml", SMALL_SIPOLICY.encode()),
    ]


def loldrivers_rows(count: int = 4) -> tuple[list[str], list[dict[str, str]]]:
    text = (DATA / "policy" / "loldrivers-drivers.csv").read_text(encoding="utf-8-sig")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows = [row for _, row in zip(range(count), reader, strict=False)]
    return list(reader.fieldnames or ()), rows


def loldrivers_seeds() -> Seeds:
    """Byte 0 of an input is the --include-md5 switch (bit 0), the rest the catalogue."""
    fields, rows = loldrivers_rows()
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, quoting=csv.QUOTE_ALL)
    writer.writeheader()
    writer.writerows(rows)
    samples = "KnownVulnerableSamples_"
    document = []
    for row in rows:
        hashes = {alg: row.get(f"{samples}{alg}", "") for alg in ("MD5", "SHA1", "SHA256")}
        auth = {alg: row.get(f"{samples}Authentihash_{alg}", "") for alg in hashes}
        sample = {**hashes, "Authentihash": auth}
        document.append(
            {
                "Id": row["Id"],
                "Tags": [row.get("Tags", "")],
                "Category": row.get("Category"),
                "KnownVulnerableSamples": [sample],
            }
        )
    csv_bytes = buffer.getvalue().encode()
    json_bytes = json.dumps(document, indent=1).encode()
    return [
        ("drivers.csv", b"\x00" + csv_bytes),
        ("drivers-md5.csv", b"\x01" + csv_bytes),
        ("drivers.json", b"\x00" + json_bytes),
    ]


def policy_seeds() -> Seeds:
    """The example policy, and what the importers write for their seeds."""
    from codeintegrity.policy.dump import dump_policy
    from codeintegrity.policy.loldrivers import import_loldrivers
    from codeintegrity.policy.wdac import import_wdac

    out: Seeds = [("example.toml", (ROOT / "examples" / "policy.toml").read_bytes())]
    for name, data in wdac_seeds():
        out.append((f"{name}.toml", dump_policy(import_wdac(data).policy).encode()))
    for name, data in loldrivers_seeds()[:1]:
        policy = import_loldrivers(data[1:]).policy
        out.append((f"{name}.toml", dump_policy(policy).encode()))
    return out


COLLECTORS: dict[str, Callable[[], Seeds]] = {
    "pe": pe_seeds,
    "verify": pe_seeds,
    "tamper": tamper_seeds,
    "pkcs7": pkcs7_seeds,
    "catalog": catalog_seeds,
    "wdac": wdac_seeds,
    "policy": policy_seeds,
    "loldrivers": loldrivers_seeds,
}


def seeds(target: str) -> Seeds:
    """(name, bytes) of every seed of ``target``, duplicates removed."""
    seen: set[bytes] = set()
    out: Seeds = []
    for name, data in COLLECTORS[target]():
        digest = hashlib.sha256(data).digest()
        if digest not in seen:
            seen.add(digest)
            out.append((name, data))
    return out


def write(target: str, directory: Path) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    found = seeds(target)
    for name, data in found:
        tag = hashlib.sha1(data, usedforsecurity=False).hexdigest()[:12]
        (directory / f"seed-{tag}-{name}"[:120]).write_bytes(data)
    return len(found)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in COLLECTORS:
        print(f"usage: python -m fuzz.seeds {{{'|'.join(COLLECTORS)}}} DIR", file=sys.stderr)
        return 2
    count = write(argv[0], Path(argv[1]))
    print(f"{argv[0]}: {count} seeds in {argv[1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
