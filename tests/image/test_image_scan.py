"""`scan_image` over the built disk image in every container, and over the mounted tree."""

from __future__ import annotations

from pathlib import Path

import pytest

from codeintegrity.authenticode.trust import TrustStore
from codeintegrity.image.limits import ImageLimits
from codeintegrity.image.scan import ImageOptions, open_and_scan
from codeintegrity.image.source import ImageOpenError, open_source
from codeintegrity.image.summary import summarize
from codeintegrity.options import VerifyOptions
from codeintegrity.policy.loldrivers import import_loldrivers
from codeintegrity.policy.wdac import import_wdac
from codeintegrity.verify import verify_path

from ..conftest import DATA, PKI
from .imagedata import CONTAINERS, WINDIVERT

SYSTEM32 = "C:\\Windows\\System32\\"
EXPECTED = {
    "drivers\\pciide.sys": "valid",
    "drivers\\WinDivert64.sys": "valid",
    "drivers\\WinDivert64_tampered.sys": "invalid",
    "DXCore.dll": "valid",
    "cat_member_t64.exe": "valid",
    "t64_tampered.exe": "unsigned",
}


@pytest.fixture(scope="module")
def trust():
    return TrustStore.default() | TrustStore.from_paths([str(PKI / "ca.pem")])


def _scan(path, trust, home, **kw):
    options = ImageOptions(
        catalog_cache_dir=home / "cats", catalog_index=str(home / "catalogs.sqlite3"), **kw
    )
    return open_and_scan(str(path), VerifyOptions(trust=trust), options)


def _comparable(scan):
    """Everything a verdict says, minus where the image came from."""
    files = [
        (
            v.windows_path,
            v.nt_path,
            v.problem,
            None
            if v.report is None
            else {k: val for k, val in v.report.to_dict().items() if k != "path"},
        )
        for v in scan.files
    ]
    summary = {k: v for k, v in summarize(scan).items() if k not in ("image", "container")}
    return files, summary


def test_raw_image_verdicts(image_set, trust, tmp_path):
    scan = _scan(image_set.disks["raw"], trust, tmp_path)
    got = {
        v.windows_path.removeprefix(SYSTEM32): str(v.report.status)
        for v in scan.files
        if v.report is not None
    }
    assert got == EXPECTED
    assert scan.computer_name == "WIN-IMAGE01"
    assert scan.device == "\\Device\\HarddiskVolume1"
    tampered = next(v for v in scan.files if v.rel.endswith("WinDivert64_tampered.sys"))
    assert (
        tampered.nt_path
        == "\\Device\\HarddiskVolume1\\Windows\\System32\\drivers\\WinDivert64_tampered.sys"
    )
    assert [s.name for s in tampered.services] == ["BadFlt"]  # OldDrv is disabled
    member = next(v for v in scan.files if v.rel.endswith("cat_member_t64.exe"))
    assert member.report.catalog.path == (
        "C:\\Windows\\System32\\CatRoot\\{F750E6C3-38EE-11D1-85E5-00C04FC295EE}\\fixtures.cat"
    )
    dxcore = next(v for v in scan.files if v.rel.endswith("DXCore.dll"))
    assert dxcore.report.catalog is not None and dxcore.report.catalog.path.endswith(".cat")


def test_summary_says_what_would_be_refused_at_next_boot(image_set, trust, tmp_path):
    summary = summarize(_scan(image_set.disks["raw"], trust, tmp_path))
    refused = {item["service"]: item["reasons"] for item in summary["refused_at_next_boot"]}
    assert set(refused) == {"BadFlt", "Ghost", "pciide"}
    assert refused["Ghost"] == ["file missing"]
    assert refused["BadFlt"][0].startswith("invalid: image hash does not match the signature")
    assert refused["pciide"] == [
        "denied by Contoso image policy (C:\\Windows\\System32\\CodeIntegrity\\CiPolicies\\Active\\"
        "{6C1E4F2A-93B1-4D2E-A1C4-2B7D5E8F9A01}.cip): file hash is denied by policy"
    ]
    policies = {p["kind"]: p for p in summary["policies"]}
    assert policies["blocklist"]["name"] == "Microsoft Windows Driver Policy - Enforced"
    assert policies["blocklist"]["signed"] and policies["blocklist"]["enforced"]
    assert not policies["active"]["signed"] and policies["active"]["mode"] == "enforce"
    assert summary["catalogs"] == 2 and summary["blocklist_enforced"]
    bad = {item["path"]: item for item in summary["not_valid"]}
    assert set(bad) == {
        SYSTEM32 + "drivers\\WinDivert64_tampered.sys",
        SYSTEM32 + "t64_tampered.exe",
    }
    assert bad[SYSTEM32 + "t64_tampered.exe"]["reasons"]


def test_identical_results_across_containers_and_the_mounted_tree(image_set, trust, tmp_path):
    baseline = _comparable(_scan(image_set.disks["raw"], trust, tmp_path))
    assert len(baseline[0]) == 7  # six files judged and the missing Ghost driver
    for name in CONTAINERS[1:]:
        assert _comparable(_scan(image_set.disks[name], trust, tmp_path)) == baseline, name
    tree = _comparable(_scan(image_set.tree, trust, tmp_path))
    assert tree == baseline


def test_reference_policies_name_what_they_would_deny(image_set, trust, tmp_path):
    windivert = verify_path(WINDIVERT)
    sha256 = windivert.authentihash["sha256"].upper()
    newer = import_wdac(_DENY_ONE.replace("HASH", sha256), source="newer-blocklist.xml").policy
    loldrivers = import_loldrivers((DATA / "policy" / "loldrivers-drivers.csv").read_bytes()).policy
    scan = _scan(
        image_set.disks["qcow2"],
        trust,
        tmp_path,
        reference_policies=(("newer blocklist", newer), ("LOLDrivers", loldrivers)),
    )
    denied = summarize(scan)["denied_by_reference_policies"]
    assert set(denied) == {"newer blocklist", "LOLDrivers"}
    newer_paths = {item["path"]: item for item in denied["newer blocklist"]}
    assert set(newer_paths) == {SYSTEM32 + "drivers\\WinDivert64.sys"}
    assert newer_paths[SYSTEM32 + "drivers\\WinDivert64.sys"]["loaded_at_boot"]
    assert SYSTEM32 + "drivers\\WinDivert64.sys" in {i["path"] for i in denied["LOLDrivers"]}
    # A reference policy that denies nothing is still answered, with an empty list.
    nothing = import_wdac(_DENY_ONE.replace("HASH", "00" * 32)).policy
    quiet = summarize(_scan(image_set.tree, trust, tmp_path, reference_policies=(("q", nothing),)))
    assert quiet["denied_by_reference_policies"] == {"q": []}


def test_all_files_and_the_size_limit(image_set, trust, tmp_path):
    everything = _scan(image_set.disks["E01"], trust, tmp_path, all_files=True)
    paths = {v.windows_path for v in everything.files}
    assert "C:\\Program Files\\Tool\\tool.exe" in paths
    assert not any(p.lower().endswith((".cat", ".txt", "system")) for p in paths)
    # NTFS metafiles are filesystem metadata: passed over and counted, never "unreadable".
    assert not any("$" in p for p in paths)
    assert not [v.problem for v in everything.files if v.problem not in (None, "file missing")]
    skipped = set(everything.metafiles_skipped)
    assert {"C:\\$MFT", "C:\\$Secure", "C:\\$UpCase", "C:\\$Extend"} <= skipped
    assert not any(p.startswith("C:\\$Extend\\") for p in skipped)  # pruned as one folder
    summary = summarize(everything)
    assert summary["ntfs_metafiles_skipped"] == len(skipped) == 11
    assert {i["status"] for i in summary["not_valid"]} == {"invalid", "unsigned"}
    small = _scan(
        image_set.disks["vhdx"], trust, tmp_path, limits=ImageLimits(max_file_size=100_000)
    )
    dxcore = next(v for v in small.files if v.rel.endswith("DXCore.dll"))
    assert dxcore.report is None and "over the 100000-byte limit" in dxcore.problem
    assert dxcore.windows_path in {i["path"] for i in summarize(small)["not_valid"]}


def test_what_cannot_be_opened(tmp_path):
    junk = tmp_path / "junk.raw"
    junk.write_bytes(b"\0" * 65536)
    with pytest.raises(ImageOpenError):
        open_source(str(junk))
    with pytest.raises(ImageOpenError, match="no such file"):
        open_source(str(tmp_path / "absent.E01"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ImageOpenError, match="no volume holds Windows"):
        _scan(empty, TrustStore.empty(), tmp_path)


_DENY_ONE = """<?xml version="1.0" encoding="utf-8"?>
<SiPolicy xmlns="urn:schemas-microsoft-com:sipolicy">
  <VersionEx>10.0.99999.0</VersionEx>
  <PlatformID>{2E07F7E4-194C-4D20-B7C9-6F44A6C5A234}</PlatformID>
  <Rules />
  <FileRules>
    <Allow ID="ID_ALLOW_ALL" FileName="*" />
    <Deny ID="ID_DENY_WINDIVERT" FriendlyName="WinDivert64.sys Hash Sha256" Hash="HASH" />
  </FileRules>
  <Signers />
  <SigningScenarios>
    <SigningScenario Value="131" ID="ID_SIGNINGSCENARIO_DRIVERS_1">
      <ProductSigners>
        <FileRulesRef>
          <FileRuleRef RuleID="ID_ALLOW_ALL" />
          <FileRuleRef RuleID="ID_DENY_WINDIVERT" />
        </FileRulesRef>
      </ProductSigners>
    </SigningScenario>
  </SigningScenarios>
</SiPolicy>
"""


def test_walks_sniff_for_pe_before_reading(image_set, trust, tmp_path):
    import shutil

    tree = tmp_path / "tree"
    shutil.copytree(image_set.tree, tree)
    (tree / "pagefile.sys").write_bytes(b"\0" * 300_000)  # not a PE, over the limit below
    (tree / "Windows" / "System32" / "drivers" / "notes.sys").write_bytes(b"text")
    scan = _scan(tree, trust, tmp_path, all_files=True, limits=ImageLimits(max_file_size=200_000))
    shown = {v.windows_path: v for v in scan.files}
    assert "C:\\pagefile.sys" not in shown
    assert "C:\\Windows\\System32\\drivers\\notes.sys" not in shown
    # A PE over the limit is still named, never silently dropped.
    assert "over the 200000-byte limit" in shown["C:\\Windows\\System32\\DXCore.dll"].problem


def test_metafile_names_in_a_copied_tree_are_skipped_only_at_the_root(image_set, trust, tmp_path):
    import shutil

    tree = tmp_path / "tree"
    shutil.copytree(image_set.tree, tree)
    pe = (image_set.tree / "Program Files" / "Tool" / "tool.exe").read_bytes()
    (tree / "$MFT").write_bytes(pe)  # a copy that kept the metafiles: metadata still
    (tree / "$Extend").mkdir()
    (tree / "$Extend" / "$UsnJrnl").write_bytes(pe)
    (tree / "Program Files" / "Tool" / "$Boot").write_bytes(pe)  # not at the root: a file
    scan = _scan(tree, trust, tmp_path, all_files=True)
    shown = {v.windows_path for v in scan.files}
    assert "C:\\Program Files\\Tool\\$Boot" in shown
    assert not {"C:\\$MFT", "C:\\$Extend\\$UsnJrnl"} & shown
    assert sorted(scan.metafiles_skipped) == ["C:\\$Extend", "C:\\$MFT"]


def test_a_supplemental_without_its_base_enforces_nothing(image_set, trust, tmp_path):
    import shutil

    from .sipolicy_compile import compile_policy

    tree = tmp_path / "tree"
    shutil.copytree(image_set.tree, tree)
    xml = (DATA / "image" / "image-policy.xml").read_text(encoding="utf-8")
    supplemental = xml.replace('PolicyType="Base Policy"', 'PolicyType="Supplemental Policy"')
    supplemental = supplemental.replace(
        "<BasePolicyID>{6C1E4F2A-93B1-4D2E-A1C4-2B7D5E8F9A01}",
        "<BasePolicyID>{11111111-2222-3333-4444-555555555555}",
    ).replace("<PolicyID>{6C1E4F2A", "<PolicyID>{7C1E4F2A")
    active = tree / "Windows" / "System32" / "CodeIntegrity" / "CiPolicies" / "Active"
    (active / "{7C1E4F2A-93B1-4D2E-A1C4-2B7D5E8F9A01}.cip").write_bytes(
        compile_policy(supplemental)
    )
    summary = summarize(_scan(tree, trust, tmp_path))
    kinds = sorted((p["kind"], p["enforced"]) for p in summary["policies"])
    assert kinds == [("active", True), ("blocklist", True), ("supplemental", False)]
    assert any(
        "supplemental policy of {11111111-2222-3333-4444-555555555555}, which is not an active "
        "base policy on the image: not enforced" in w
        for w in summary["warnings"]
    )
    assert {r["service"] for r in summary["refused_at_next_boot"]} == {"BadFlt", "Ghost", "pciide"}


BASE_GUID = "{A1B2C3D4-5E6F-4A1B-8C2D-3E4F5A6B7C01}"
SUPPLEMENTAL_GUID = "{A1B2C3D4-5E6F-4A1B-8C2D-3E4F5A6B7C02}"


def with_allowlist(image_set, tmp_path, supplemental=True, base_takes_supplementals=True):
    """The image's tree plus a second base policy (a kernel allowlist of pciide.sys only) and,
    optionally, its supplemental allowing WinDivert64.sys."""
    import shutil

    from .sipolicy_compile import compile_policy

    tree = tmp_path / "tree"
    shutil.copytree(image_set.tree, tree)
    active = tree / "Windows" / "System32" / "CodeIntegrity" / "CiPolicies" / "Active"
    base = (DATA / "image" / "allowlist-base.xml").read_text(encoding="utf-8")
    if not base_takes_supplementals:
        base = base.replace("<Option>Enabled:Allow Supplemental Policies</Option>", "")
    (active / f"{BASE_GUID}.cip").write_bytes(compile_policy(base))
    if supplemental:
        xml = (DATA / "image" / "allowlist-supplemental.xml").read_text(encoding="utf-8")
        (active / f"{SUPPLEMENTAL_GUID}.cip").write_bytes(compile_policy(xml))
    return tree


def test_a_supplemental_allows_what_its_base_alone_denies(image_set, trust, tmp_path):
    alone = summarize(_scan(with_allowlist(image_set, tmp_path / "a", False), trust, tmp_path))
    refused = {r["service"]: r["reasons"] for r in alone["refused_at_next_boot"]}
    assert set(refused) == {"BadFlt", "Ghost", "pciide", "WinDivert"}
    assert refused["WinDivert"] == [
        f"denied by Contoso driver allowlist (C:\\Windows\\System32\\CodeIntegrity\\CiPolicies\\"
        f"Active\\{BASE_GUID}.cip): signer is not in the policy's allowed signers"
    ]

    tree = with_allowlist(image_set, tmp_path / "b")
    scan = _scan(tree, trust, tmp_path)
    summary = summarize(scan)
    # Base + supplemental is a union: WinDivert64.sys loads. Two bases intersect: pciide.sys,
    # allowed by the allowlist, is still denied by the image's other base policy.
    refused = {r["service"]: r["reasons"] for r in summary["refused_at_next_boot"]}
    assert set(refused) == {"BadFlt", "Ghost", "pciide"}
    assert [r for r in refused["pciide"] if "allowlist" in r] == []
    windivert = next(v for v in scan.files if v.rel.endswith("drivers/WinDivert64.sys"))
    assert windivert.report.decision.allowed and all(d.allowed for _n, d in windivert.enforced)
    policies = {p["id"]: p for p in summary["policies"]}
    base_path = f"C:\\Windows\\System32\\CodeIntegrity\\CiPolicies\\Active\\{BASE_GUID}.cip"
    assert policies["contoso-windivert-2026-11"]["kind"] == "supplemental"
    assert policies["contoso-windivert-2026-11"]["merged_into"] == base_path
    assert policies["contoso-windivert-2026-11"]["enforced"]
    assert policies["contoso-base-2026-11"]["supplementals"] == [base_path.replace("7C01", "7C02")]
    # Its deny rule is not applied, and the summary says so.
    assert any(
        "1 x deny rule (a supplemental policy cannot deny)" in w for w in summary["warnings"]
    )


def test_a_base_that_takes_no_supplementals_ignores_them(image_set, trust, tmp_path):
    tree = with_allowlist(image_set, tmp_path, base_takes_supplementals=False)
    summary = summarize(_scan(tree, trust, tmp_path))
    assert "WinDivert" in {r["service"] for r in summary["refused_at_next_boot"]}
    assert any(
        "does not allow supplemental policies (Enabled:Allow Supplemental Policies): not "
        "enforced" in w
        for w in summary["warnings"]
    )
    supplemental = next(p for p in summary["policies"] if p["kind"] == "supplemental")
    assert not supplemental["enforced"] and supplemental["merged_into"] is None


def test_signed_policies_are_verified_and_a_tampered_one_is_not_enforced(
    image_set, trust, tmp_path
):
    import shutil

    from .imagedata import IMAGE_POLICY_XML, POLICY_GUID, sign_pkcs7
    from .sipolicy_compile import compile_policy

    def tree_with(policy: bytes, name: str) -> Path:
        tree = tmp_path / name
        shutil.copytree(image_set.tree, tree)
        active = tree / "Windows" / "System32" / "CodeIntegrity" / "CiPolicies" / "Active"
        (active / f"{POLICY_GUID}.cip").write_bytes(policy)
        return tree

    bare = tmp_path / "policy.bin"
    bare.write_bytes(compile_policy(IMAGE_POLICY_XML.read_text(encoding="utf-8")))
    sign_pkcs7(bare, tmp_path / "policy.p7b")  # openssl cms -sign with the test PKI
    signed = (tmp_path / "policy.p7b").read_bytes()
    summary = summarize(_scan(tree_with(signed, "signed"), trust, tmp_path))
    own = next(p for p in summary["policies"] if p["kind"] == "active")
    assert own["signed"] and own["enforced"]
    assert own["signature"]["status"] == "valid" and own["signature"]["trusted"]
    assert "pciide" in {r["service"] for r in summary["refused_at_next_boot"]}

    # The same file with the policy's name changed after signing: its messageDigest no longer
    # matches. Windows refuses to load it, so its deny rule on pciide.sys does not apply.
    name = "Contoso image policy".encode("utf-16-le")
    tampered = signed.replace(name, "Kontoso image policy".encode("utf-16-le"))
    summary = summarize(_scan(tree_with(tampered, "tampered"), trust, tmp_path))
    own = next(p for p in summary["policies"] if p["kind"] == "active")
    assert own["name"] == "Kontoso image policy"
    assert own["signature"]["status"] == "invalid" and not own["enforced"]
    assert own["signature"]["problems"][0].startswith("messageDigest")
    assert any(
        "signed policy whose signature does not verify (messageDigest" in w
        and "Windows refuses to load it; not enforced here" in w
        for w in summary["warnings"]
    )
    assert {r["service"] for r in summary["refused_at_next_boot"]} == {"BadFlt", "Ghost"}
    from codeintegrity.image.summary import summary_lines

    shown = "\n".join(summary_lines(summary))
    assert "Kontoso image policy [contoso-2026-11], enforce, signature INVALID, present, not " in (
        shown
    )


def test_a_dirty_system_hive_is_reported(image_set, trust, tmp_path):
    import shutil

    from .test_registry_paths import dirty

    assert summarize(_scan(image_set.tree, trust, tmp_path))["hive_dirty"] is False
    tree = tmp_path / "tree"
    shutil.copytree(image_set.tree, tree)
    config = tree / "Windows" / "System32" / "config"
    (config / "SYSTEM").write_bytes(dirty((config / "SYSTEM").read_bytes()))
    (config / "SYSTEM.LOG1").write_bytes(b"regf" + b"\0" * 508)  # present, not replayed
    summary = summarize(_scan(tree, trust, tmp_path))
    assert summary["hive_dirty"] is True
    warning = next(w for w in summary["warnings"] if "SYSTEM is dirty" in w)
    assert "(sequence numbers 2 and 1 differ)" in warning
    assert "(SYSTEM.LOG1) are not replayed" in warning and "may be stale" in warning
    # The settings read from the hive file are still used (and said to be possibly stale).
    assert summary["computer_name"] == "WIN-IMAGE01"


def test_files_are_judged_from_dissect_reads_of_bounded_size(
    image_set, trust, tmp_path, monkeypatch
):
    """Every file is read through dissect's file object in chunks (64 KiB here) and the
    parsers' demand blocks, never whole, and judged as from the mounted tree."""
    from codeintegrity.image import source as image_source
    from codeintegrity.pe import hashing
    from codeintegrity.pe.source import DEMAND_BLOCK

    baseline = _comparable(_scan(image_set.tree, trust, tmp_path))
    chunk = 65536
    monkeypatch.setattr(hashing, "STREAM_CHUNK_SIZE", chunk)
    reads: list[tuple[int, int, int]] = []  # (file size, source, length)
    read = image_source.DissectFileSource.read
    sources: list[object] = []  # held, so no two files' sources share an id

    def counted(self, offset, length):
        sources.append(self)
        data = read(self, offset, length)
        reads.append((self.size, id(self), len(data)))
        return data

    monkeypatch.setattr(image_source.DissectFileSource, "read", counted)
    assert _comparable(_scan(image_set.disks["raw"], trust, tmp_path)) == baseline
    sizes = {size for size, _o, _n in reads}
    assert max(sizes) > 2 * DEMAND_BLOCK  # DXCore.dll: it cannot have been read whole
    assert max(n for _s, _o, n in reads) <= 2 * DEMAND_BLOCK
    for source in {o for _s, o, _n in reads}:
        # About one pass per file: each chunk reads a page more, demand blocks re-read a few.
        size = next(s for s, o, _n in reads if o == source)
        total = sum(n for _s, o, n in reads if o == source)
        assert total <= size * (1 + 8192 / chunk) + 3 * DEMAND_BLOCK, size


class _DamagedRuns:
    """A dissect file object whose run list breaks mid-file (dissect raises its own error)."""

    size = 8192

    def seek(self, offset: int) -> None:
        pass

    def read(self, length: int) -> bytes:
        raise ValueError("run list points past the volume")

    def close(self) -> None:
        pass


def test_a_damaged_file_read_whole_from_an_image_is_an_oserror_not_a_crash():
    # Catalogs, hives and policies are read whole (Volume.read); the callers handle OSError
    # (an unreadable file, counted and reported), so dissect's own errors must arrive as one.
    from codeintegrity.image.source import DissectVolume

    volume = DissectVolume(fs=None, number=1, label="C")
    volume._open = lambda rel: _DamagedRuns()  # type: ignore[method-assign]
    with pytest.raises(OSError, match="run list points past the volume"):
        volume.read("Windows/System32/CatRoot/x.cat", 1 << 20)
