"""A parsed binary policy rendered as SiPolicy XML (generated IDs), for ``import_wdac``.

Binary policies carry no names, IDs or FriendlyNames: rules get ``ID_DENY_D_0001``-style IDs
and signers ``Signer N``. A deny hash rule of SHA-1 or SHA-256 length also gets a "Hash Page"
twin referenced by the same scenarios, because the binary form cannot say which kind it was.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from xml.etree.ElementTree import Element

    from .sipolicy_bin import BinaryPolicy, FileRule, SignerGroup

_NS = "urn:schemas-microsoft-com:sipolicy"


def to_xml(policy: BinaryPolicy) -> str:
    """The policy as SiPolicy XML with generated IDs (``ID_DENY_D_0001``...)."""
    import xml.etree.ElementTree as ET  # noqa: S405 - builds XML, parses nothing

    sub = _sub
    ET.register_namespace("", _NS)
    root = ET.Element(f"{{{_NS}}}SiPolicy")
    if policy.policy_id is not None:
        root.set("PolicyType", "Supplemental Policy" if policy.supplemental else "Base Policy")
    sub(root, "VersionEx").text = policy.version
    if policy.policy_id is not None and policy.base_policy_id is not None:
        sub(root, "PolicyID").text = _guid(policy.policy_id)
        sub(root, "BasePolicyID").text = _guid(policy.base_policy_id)
    else:
        sub(root, "PolicyTypeID").text = _guid(policy.policy_type_id)
    sub(root, "PlatformID").text = _guid(policy.platform_id)
    rules = sub(root, "Rules")
    for option in policy.options:
        sub(sub(rules, "Rule"), "Option").text = option
    ekus = sub(root, "EKUs")
    for i, eku_value in enumerate(policy.ekus):
        sub(ekus, "EKU", ID=f"ID_EKU_E_{i + 1:04X}", Value=eku_value.hex().upper())

    rule_ids: list[str] = []
    page_twins: dict[int, str] = {}
    file_rules = sub(root, "FileRules")
    for i, rule in enumerate(policy.file_rules):
        rule_id = f"ID_{rule.kind.upper()}_{rule.kind[0]}_{i + 1:04X}"
        rule_ids.append(rule_id)
        attrs = _rule_attrs(rule)
        sub(file_rules, rule.kind, ID=rule_id, **attrs)
        if rule.kind == "Deny" and len(rule.hash) in (20, 32):
            # No FriendlyName survives compilation: the value may be a first-page hash.
            twin = f"{rule_id}_PAGE"
            page_twins[i] = twin
            sub(file_rules, "Deny", ID=twin, FriendlyName="Hash Page", **attrs)

    signer_ids = [f"ID_SIGNER_S_{i + 1:04X}" for i in range(len(policy.signers))]
    signers = sub(root, "Signers")
    for i, signer in enumerate(policy.signers):
        element = sub(signers, "Signer", ID=signer_ids[i], Name=f"Signer {i + 1}")
        if signer.root_tbs is not None:
            sub(element, "CertRoot", Type="TBS", Value=signer.root_tbs.hex().upper())
        else:
            sub(element, "CertRoot", Type="WellKnown", Value=f"{signer.well_known or 0:02X}")
        for eku in signer.ekus:
            sub(element, "CertEKU", ID=f"ID_EKU_E_{eku + 1:04X}")
        if signer.issuer:
            sub(element, "CertIssuer", Value=signer.issuer)
        if signer.publisher:
            sub(element, "CertPublisher", Value=signer.publisher)
        if signer.oem_id:
            sub(element, "CertOemID", Value=signer.oem_id)
        for ref in signer.file_attribs:
            sub(element, "FileAttribRef", RuleID=rule_ids[ref])

    scenarios = sub(root, "SigningScenarios")
    for i, scenario in enumerate(policy.scenarios):
        element = sub(
            scenarios, "SigningScenario", Value=str(scenario.value), ID=f"ID_SIGNINGSCENARIO_{i}"
        )
        for tag, group in zip(
            ("ProductSigners", "TestSigners", "TestSigningSigners"), scenario.groups, strict=True
        ):
            holder = sub(element, tag)
            _group_xml(holder, group, signer_ids, rule_ids, page_twins)
    for tag, refs in (
        ("UpdatePolicySigners", policy.update_signers),
        ("CiSigners", policy.ci_signers),
        ("SupplementalPolicySigners", policy.supplemental_signers),
    ):
        holder = sub(root, tag)
        for ref in refs:
            sub(holder, tag[:-1], SignerId=signer_ids[ref])
    if policy.hvci_options:
        sub(root, "HvciOptions").text = str(policy.hvci_options)
    settings = sub(root, "Settings")
    for provider, key, name, value in policy.settings:
        element = sub(settings, "Setting", Provider=provider, Key=key, ValueName=name)
        holder = sub(element, "Value")
        if isinstance(value, bool):
            sub(holder, "Boolean").text = "true" if value else "false"
        elif isinstance(value, int):
            sub(holder, "DWord").text = str(value)
        elif isinstance(value, bytes):
            sub(holder, "Binary").text = value.hex().upper()
        else:
            sub(holder, "String").text = str(value)
    return ET.tostring(root, encoding="unicode")


def _rule_attrs(rule: FileRule) -> dict[str, str | None]:
    return {
        "FileName": rule.file_name,
        "MinimumFileVersion": rule.minimum_version,
        "MaximumFileVersion": rule.maximum_version,
        "Hash": rule.hash.hex().upper() if rule.hash else None,
        "AppIDs": rule.app_ids,
        "InternalName": rule.internal_name,
        "FileDescription": rule.file_description,
        "ProductName": rule.product_name,
        "PackageFamilyName": rule.package_family_name,
        "PackageVersion": rule.package_version,
        "FilePath": rule.file_path,
    }


def _sub(parent: Element, tag: str, **attrs: str | None) -> Element:
    from xml.etree.ElementTree import SubElement  # noqa: S405 - builds XML, parses nothing

    clean = {k: v for k, v in attrs.items() if v is not None}
    return SubElement(parent, f"{{{_NS}}}{tag}", clean)


def _group_xml(
    holder: Element,
    group: SignerGroup,
    signer_ids: list[str],
    rule_ids: list[str],
    page_twins: dict[int, str],
) -> None:
    if group.allowed:
        allowed = _sub(holder, "AllowedSigners")
        for signer, exceptions in group.allowed:
            element = _sub(allowed, "AllowedSigner", SignerId=signer_ids[signer])
            for ref in exceptions:
                _sub(element, "ExceptDenyRule", DenyRuleID=rule_ids[ref])
    if group.denied:
        denied = _sub(holder, "DeniedSigners")
        for signer, exceptions in group.denied:
            element = _sub(denied, "DeniedSigner", SignerId=signer_ids[signer])
            for ref in exceptions:
                _sub(element, "ExceptAllowRule", AllowRuleID=rule_ids[ref])
    if group.file_rules:
        refs = _sub(holder, "FileRulesRef")
        for ref in group.file_rules:
            _sub(refs, "FileRuleRef", RuleID=rule_ids[ref])
            if ref in page_twins:
                _sub(refs, "FileRuleRef", RuleID=page_twins[ref])


def _guid(value: uuid.UUID) -> str:
    return "{" + str(value).upper() + "}"
