"""A small SiPolicy XML -> binary compiler for test fixtures (what ConvertFrom-CIPolicy does).

Written from the format notes of the community parsers (see policy/sipolicy_bin.py), not from
our parser, so the tests compare two independent walks of the format. Emits format version 7
(end tag 8); a PKCS#7 wrapper is added by openssl in the image builder, not here.
"""

from __future__ import annotations

import struct
import uuid
import xml.etree.ElementTree as ET

_NS = "{urn:schemas-microsoft-com:sipolicy}"
_OPTIONS = {
    "enabled:umci": 0x4,
    "enabled:boot menu protection": 0x8,
    "enabled:intelligent security graph authorization": 0x10,
    "enabled:invalidate eas on reboot": 0x20,
    "enabled:windows lockdown trial mode": 0x40,
    "required:whql": 0x80,
    "enabled:developer mode dynamic code trust": 0x100,
    "enabled:allow supplemental policies": 0x400,
    "disabled:runtime filepath rule protection": 0x800,
    "enabled:revoked expired as unsigned": 0x2000,
    "enabled:audit mode": 0x10000,
    "disabled:flight signing": 0x20000,
    "enabled:inherit default policy": 0x40000,
    "enabled:unsigned system integrity policy": 0x80000,
    "enabled:dynamic code security": 0x100000,
    "required:ev signers": 0x200000,
    "enabled:boot audit on failure": 0x400000,
    "enabled:advanced boot options menu": 0x800000,
    "disabled:script enforcement": 0x1000000,
    "required:enforce store applications": 0x2000000,
    "enabled:secure setting policy": 0x4000000,
    "enabled:managed installer": 0x8000000,
    "enabled:update policy no reboot": 0x10000000,
    "enabled:conditional windows lockdown policy": 0x20000000,
}
_KINDS = {"Deny": 0, "Allow": 1, "FileAttrib": 2}


def _all(element: ET.Element | None, tag: str) -> list[ET.Element]:
    return [] if element is None else element.findall(_NS + tag)


def _one(element: ET.Element | None, tag: str) -> ET.Element | None:
    return None if element is None else element.find(_NS + tag)


class _Out:
    def __init__(self) -> None:
        self.buf = bytearray()

    def u32(self, value: int) -> None:
        self.buf += struct.pack("<I", value)

    def u64(self, value: int) -> None:
        self.buf += struct.pack("<Q", value)

    def blob(self, raw: bytes) -> None:
        self.u32(len(raw))
        self.buf += raw + b"\0" * (-len(raw) & 3)

    def string(self, text: str | None) -> None:
        self.blob((text or "").encode("utf-16-le"))
        self.u32(0)

    def guid(self, text: str | None) -> None:
        self.buf += uuid.UUID(text.strip("{}")).bytes_le if text else b"\0" * 16


def _version(text: str | None) -> int:
    if not text:
        return 0
    parts = [int(p) for p in text.split(".")]
    parts += [0] * (4 - len(parts))
    return (parts[0] << 48) | (parts[1] << 32) | (parts[2] << 16) | parts[3]


def compile_policy(xml_text: str) -> bytes:
    root = ET.fromstring(xml_text.lstrip("\ufeff"))  # noqa: S314 - our own fixtures
    ekus = _all(_one(root, "EKUs"), "EKU")
    eku_index = {e.get("ID"): i for i, e in enumerate(ekus)}
    rules = list(_one(root, "FileRules") or [])
    rule_index = {r.get("ID"): i for i, r in enumerate(rules)}
    signers = _all(_one(root, "Signers"), "Signer")
    signer_index = {s.get("ID"): i for i, s in enumerate(signers)}
    scenarios = _all(_one(root, "SigningScenarios"), "SigningScenario")
    flags = 0x80000000
    for option in root.iter(_NS + "Option"):
        flags |= _OPTIONS[(option.text or "").strip().lower()]
    policy_id = _one(root, "PolicyID")
    base_id = _one(root, "BasePolicyID")
    type_id = _one(root, "PolicyTypeID")
    base_text = (base_id if base_id is not None else type_id).text  # type: ignore[union-attr]
    policy_text = (policy_id if policy_id is not None else type_id).text  # type: ignore[union-attr]

    out = _Out()
    out.u32(7)
    out.guid(base_text)
    out.guid(_one(root, "PlatformID").text)  # type: ignore[union-attr]
    out.u32(flags)
    for n in (len(ekus), len(rules), len(signers), len(scenarios)):
        out.u32(n)
    out.u64(_version(_one(root, "VersionEx").text))  # type: ignore[union-attr]
    out.u32(0x40)
    for eku in ekus:
        out.blob(bytes.fromhex(eku.get("Value", "")))
    for rule in rules:
        out.u32(_KINDS[rule.tag.removeprefix(_NS)])
        out.string(rule.get("FileName"))
        out.u64(_version(rule.get("MinimumFileVersion")))
        out.blob(bytes.fromhex(rule.get("Hash", "")))
    for signer in signers:
        cert_root = _one(signer, "CertRoot")
        if cert_root.get("Type") == "TBS":  # type: ignore[union-attr]
            out.u32(0)
            out.blob(bytes.fromhex(cert_root.get("Value", "")))  # type: ignore[union-attr]
        else:
            out.u32(1)
            out.u32(int(cert_root.get("Value", "0"), 16))  # type: ignore[union-attr]
        refs = _all(signer, "CertEKU")
        out.u32(len(refs))
        for ref in refs:
            out.u32(eku_index[ref.get("ID")])
        for tag in ("CertIssuer", "CertPublisher", "CertOemID"):
            element = _one(signer, tag)
            out.string(element.get("Value") if element is not None else None)
        refs = _all(signer, "FileAttribRef")
        out.u32(len(refs))
        for ref in refs:
            out.u32(rule_index[ref.get("RuleID")])
    for tag in ("UpdatePolicySigners", "CiSigners"):
        refs = _all(_one(root, tag), tag[:-1])
        out.u32(len(refs))
        for ref in refs:
            out.u32(signer_index[ref.get("SignerId")])
    scenario_index = {s.get("ID"): i for i, s in enumerate(scenarios)}
    for scenario in scenarios:
        out.u32(int(scenario.get("Value", "0")))
        inherited = [x for x in (scenario.get("InheritedScenarios") or "").split(",") if x]
        out.u32(len(inherited))
        for name in inherited:
            out.u32(scenario_index[name])
        out.u32(0x800C)
        for group_tag in ("ProductSigners", "TestSigners", "TestSigningSigners"):
            group = _one(scenario, group_tag)
            for holder, item, except_tag in (
                ("AllowedSigners", "AllowedSigner", "ExceptDenyRule"),
                ("DeniedSigners", "DeniedSigner", "ExceptAllowRule"),
            ):
                entries = _all(_one(group, holder), item)
                out.u32(len(entries))
                for entry in entries:
                    out.u32(signer_index[entry.get("SignerId")])
                    excepts = _all(entry, except_tag)
                    out.u32(len(excepts))
                    for ex in excepts:
                        out.u32(rule_index[next(iter(ex.attrib.values()))])
            refs = _all(_one(group, "FileRulesRef"), "FileRuleRef")
            out.u32(len(refs))
            for ref in refs:
                out.u32(rule_index[ref.get("RuleID")])
    hvci = _one(root, "HvciOptions")
    out.u32(int(hvci.text) if hvci is not None and hvci.text else 0)
    settings = _all(_one(root, "Settings"), "Setting")
    out.u32(len(settings))
    for setting in settings:
        out.string(setting.get("Provider"))
        out.string(setting.get("Key"))
        out.string(setting.get("ValueName"))
        value = list(_one(setting, "Value") or [])[0]
        kind = value.tag.removeprefix(_NS)
        if kind == "Boolean":
            out.u32(0)
            out.u32(1 if (value.text or "").strip().lower() == "true" else 0)
        elif kind == "DWord":
            out.u32(1)
            out.u32(int(value.text or "0"))
        elif kind == "Binary":
            out.u32(2)
            out.blob(bytes.fromhex(value.text or ""))
        else:
            out.u32(3)
            out.string(value.text)
    out.u32(3)
    for rule in rules:
        out.u64(_version(rule.get("MaximumFileVersion")))
        app_ids = rule.get("AppIDs")
        out.u32(1 if app_ids else 0)
        if app_ids:
            out.string(app_ids)
    for _ in signers:
        out.u64(0)
    out.u32(4)
    for rule in rules:
        for attr in ("InternalName", "FileDescription", "ProductName"):
            out.string(rule.get(attr))
    out.u32(5)
    for rule in rules:
        out.string(rule.get("PackageFamilyName"))
        out.u64(_version(rule.get("PackageVersion")))
    out.u32(6)
    out.guid(policy_text)
    out.guid(base_text)
    refs = _all(_one(root, "SupplementalPolicySigners"), "SupplementalPolicySigner")
    out.u32(len(refs))
    for ref in refs:
        out.u32(signer_index[ref.get("SignerId")])
    out.u32(7)
    for rule in rules:
        out.string(rule.get("FilePath"))
    out.u32(8)
    return bytes(out.buf)
