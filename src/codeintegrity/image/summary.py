"""The answer up front: what this installation would refuse at next boot, what reference
blocklists would deny, which files are tampered with or unsigned, and the trust material used.

``summarize(scan)`` is a plain dict (the last ``--json`` line, key ``summary``);
``summary_lines(summary)`` renders it for people.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .scan import FileVerdict, ImageScan


def summarize(scan: ImageScan) -> dict[str, Any]:
    hive = scan.hive
    refused: list[dict[str, Any]] = []
    for verdict in scan.files:
        if not verdict.services:
            continue
        reasons = verdict.boot_refusal_reasons
        refused.extend(
            {
                "service": service.name,
                "start": service.start_name,
                "path": verdict.windows_path,
                "reasons": reasons,
            }
            for service in verdict.services
            if reasons
        )
    # Every reference policy is listed, also one that denies nothing (that is an answer too).
    reference: dict[str, list[dict[str, Any]]] = {name: [] for name in scan.reference_names}
    for verdict in scan.files:
        for name, rules in verdict.reference_denials():
            reference.setdefault(name, []).append(
                {
                    "path": verdict.windows_path,
                    "loaded_at_boot": bool(verdict.services),
                    "rules": rules,
                }
            )
    return {
        "image": scan.source.path,
        "container": scan.source.kind,
        "computer_name": scan.computer_name,
        "system_volume": scan.device,
        "control_set": hive.control_set if hive else None,
        # The SYSTEM hive has changes pending in its transaction logs (not replayed).
        "hive_dirty": hive.base_block.dirty if hive and hive.base_block else None,
        "hvci_enabled": hive.hvci_enabled if hive else None,
        "vulnerable_driver_blocklist_enable": hive.blocklist_enabled if hive else None,
        "blocklist_enforced": scan.blocklist_enforced,
        "catalogs": scan.trust.catalog_count,
        "policies": [
            {
                "path": p.windows_path,
                "name": p.policy.name,
                "id": p.policy.id,
                "mode": p.policy.mode,
                "kind": p.kind,
                "signed": p.signed,
                "enforced": p.enforced(scan.blocklist_enforced),
                "signature": p.signature.to_dict() if p.signature is not None else None,
                "untranslated": p.untranslated,
                "base_id": p.policy.base_guid or None,
                "merged_into": p.merged_into or None,
                "supplementals": list(p.supplementals),
            }
            for p in scan.trust.policies
        ],
        "files_judged": sum(1 for v in scan.files if v.report is not None),
        "ntfs_metafiles_skipped": len(scan.metafiles_skipped),
        "refused_at_next_boot": refused,
        "denied_by_reference_policies": reference,
        "not_valid": [_not_valid(v) for v in scan.files if _is_not_valid(v)],
        "warnings": list(scan.warnings),
    }


def _is_not_valid(verdict: FileVerdict) -> bool:
    if verdict.report is None:
        return verdict.problem is not None and verdict.problem != "file missing"
    return not verdict.report.ok


def _not_valid(verdict: FileVerdict) -> dict[str, Any]:
    report = verdict.report
    if report is None:
        return {"path": verdict.windows_path, "status": "not judged", "reasons": [verdict.problem]}
    reasons = list(
        dict.fromkeys(
            f"{f.rule.summary}: {f.detail}" if f.detail else f.rule.summary for f in report.errors
        )
    )
    if not reasons and report.error:
        reasons = [report.error]
    if not reasons and str(report.status) == "unsigned":
        reasons = ["no embedded signature and no catalog of the image lists it"]
    return {"path": verdict.windows_path, "status": str(report.status), "reasons": reasons}


def summary_lines(summary: dict[str, Any]) -> list[str]:
    lines = [
        f"Image {summary['image']} ({summary['container']}): computer "
        f"{summary['computer_name'] or '?'}, system volume {summary['system_volume']}, "
        f"{summary['files_judged']} files judged",
        f"Trust material: {summary['catalogs']} catalogs; HVCI "
        f"{_flag(summary['hvci_enabled'])}; vulnerable driver blocklist "
        f"{'enforced' if summary['blocklist_enforced'] else 'not enforced'} "
        f"(VulnerableDriverBlocklistEnable={_flag(summary['vulnerable_driver_blocklist_enable'])})",
    ]
    for policy in summary["policies"]:
        state = "enforced" if policy["enforced"] else "present, not enforced"
        signature = policy["signature"]
        signed = "unsigned"
        if signature is not None:
            signed = "signed" if signature["status"] == "valid" else "signature INVALID"
            if signature["status"] == "valid" and not signature["trusted"]:
                signed += " (untrusted)"
        if policy["merged_into"]:
            state = f"enforced as a supplemental of {policy['merged_into']}"
        elif policy["supplementals"]:
            state += f", with {len(policy['supplementals'])} supplemental(s)"
        lines.append(
            f"  policy {policy['path']}: {policy['name']} [{policy['id'] or '-'}], "
            f"{policy['mode']}, {signed}, {state}"
        )
    if summary["ntfs_metafiles_skipped"]:
        lines.append(
            f"NTFS metafiles skipped: {summary['ntfs_metafiles_skipped']} "
            "($MFT, $Secure, $Extend...: filesystem metadata, not files Windows loads)"
        )
    refused = summary["refused_at_next_boot"]
    lines.append(f"Refused at next boot: {len(refused)} driver(s) set to start")
    for item in refused:
        lines.append(f"  {item['service']} ({item['start']}) {item['path']}")
        lines.extend(f"    - {reason}" for reason in item["reasons"])
    for name, items in summary["denied_by_reference_policies"].items():
        lines.append(f"Denied by {name}: {len(items)} file(s)")
        for item in items:
            boot = " [set to start]" if item["loaded_at_boot"] else ""
            lines.append(f"  {item['path']}{boot}")
            lines.extend(f"    - {rule}" for rule in item["rules"])
    bad = summary["not_valid"]
    lines.append(f"Tampered, unsigned or malformed: {len(bad)} file(s)")
    for item in bad:
        lines.append(f"  {item['status']}: {item['path']}")
        lines.extend(f"    - {reason}" for reason in item["reasons"])
    lines.extend(f"warning: {w}" for w in summary["warnings"])
    return lines


def _flag(value: object) -> str:
    return "not set" if value is None else str(value)
