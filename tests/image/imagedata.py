"""Build the small Windows disk image the image tests judge, in every container format.

Nothing here is committed as an image: ``build(out_dir)`` makes, in a few seconds,

- ``tree/``: the files of the Windows volume (also judged as "a mounted directory");
- ``disk.raw``: an MBR disk with one NTFS partition made by ``mkntfs`` and filled through a real
  ``ntfs-3g`` (FUSE) mount of that partition;
- ``disk.vhdx``, ``disk.vmdk``, ``disk.qcow2`` (``qemu-img convert``) and ``disk.E01``
  (``ewfacquire``) of the same disk.

The volume holds real signed drivers (WinDivert64.sys, LOLDrivers-listed; pciide.sys, Microsoft)
and a tampered copy, catalog-signed files and their catalogs under CatRoot, a SYSTEM hive (our
regf writer, read back by hivexget in the tests) with Services and ComputerName, and binary
Code Integrity policies compiled from WDAC XML by ``sipolicy_compile`` (the blocklist wrapped in
PKCS#7 by openssl, the image's own policy bare as a .cip). ``python -m tests.image.imagedata OUT``
(or ``tests/data/image/build.sh OUT``) builds it by hand.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .regf_writer import REG_EXPAND_SZ, Key, build_hive
from .sipolicy_compile import compile_policy

HERE = Path(__file__).resolve().parent
DATA = HERE.parent / "data"
SIGNED = DATA / "samples" / "signed"
WINDIVERT = SIGNED / "pypi__pydivert-4.0.1-py3-none-win_amd64" / "WinDivert64.sys"
SIGNIFY = DATA / "thirdparty" / "signify"
FIXTURES = DATA / "fixtures"
BLOCKLIST_XML = DATA / "policy" / "microsoft-driver-blocklist-SiPolicy.xml"
IMAGE_POLICY_XML = DATA / "image" / "image-policy.xml"
PKI = DATA / "pki"
CATROOT = "Windows/System32/CatRoot/{F750E6C3-38EE-11D1-85E5-00C04FC295EE}"
POLICY_GUID = "{6C1E4F2A-93B1-4D2E-A1C4-2B7D5E8F9A01}"
COMPUTER_NAME = "WIN-IMAGE01"
TOOLS = ("mkntfs", "ntfs-3g", "qemu-img", "ewfacquire", "openssl")
PART_START = 2048  # sectors: the first partition at 1 MiB, as Windows lays it out
PART_SECTORS = 16 * 2048  # 16 MiB (the benchmark asks for more)
CONTAINERS = ("raw", "vhdx", "vmdk", "qcow2", "E01")


@dataclass(frozen=True)
class ImageSet:
    tree: Path
    disks: dict[str, Path]  # container name -> path


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def tampered(data: bytes) -> bytes:
    """One byte of the code section changed: the signature no longer matches."""
    patched = bytearray(data)
    patched[0x1400] ^= 0x01
    return bytes(patched)


def system_hive() -> bytes:
    root = Key("ROOT")
    root.key("Select").set_dword("Current", 1).set_dword("Default", 1)
    cs = root.key("ControlSet001")
    cs.key(r"Control\ComputerName\ComputerName").set_sz("ComputerName", COMPUTER_NAME)
    cs.key(r"Control\CI\Config").set_dword("VulnerableDriverBlocklistEnable", 1)
    cs.key(r"Control\DeviceGuard\Scenarios\HypervisorEnforcedCodeIntegrity").set_dword("Enabled", 1)
    services = cs.key("Services")

    def service(name: str, image_path: str, start: int, kind: int) -> None:
        key = services.key(name)
        key.set_sz("ImagePath", image_path, REG_EXPAND_SZ)
        key.set_dword("Start", start).set_dword("Type", kind)

    service("pciide", r"System32\drivers\pciide.sys", 0, 1)  # boot, in the image's deny list
    service("WinDivert", r"\SystemRoot\System32\drivers\WinDivert64.sys", 3, 1)
    service("BadFlt", r"\??\C:\Windows\System32\drivers\WinDivert64_tampered.sys", 1, 2)
    service("Ghost", r"system32\DRIVERS\ghost.sys", 2, 1)  # set to start, file missing
    service("OldDrv", r"System32\drivers\WinDivert64_tampered.sys", 4, 1)  # disabled
    service("Spooler", r"%SystemRoot%\System32\spoolsv.exe", 2, 0x10)  # a service, not a driver
    return build_hive(root)


def sign_pkcs7(payload: Path, out: Path, content_type: str = "1.3.6.1.4.1.311.79.1") -> None:
    """Wrap a binary policy in PKCS#7 SignedData (content type szOID_CI_POLICY unless told)
    with openssl and the test PKI's leaf."""
    subprocess.run(
        [
            "openssl", "cms", "-sign", "-binary", "-nodetach", "-outform", "DER",
            "-econtent_type", content_type, "-md", "sha256", "-nosmimecap",
            "-signer", str(PKI / "leaf.pem"), "-inkey", str(PKI / "leaf.key"),
            "-in", str(payload), "-out", str(out),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip


def build_tree(tree: Path) -> None:
    system32 = tree / "Windows" / "System32"
    drivers = system32 / "drivers"
    catroot = tree / CATROOT
    ci = system32 / "CodeIntegrity"
    for folder in (drivers, catroot, system32 / "config", ci / "CiPolicies" / "Active"):
        folder.mkdir(parents=True, exist_ok=True)
    windivert = WINDIVERT.read_bytes()
    (drivers / "WinDivert64.sys").write_bytes(windivert)
    (drivers / "WinDivert64_tampered.sys").write_bytes(tampered(windivert))
    shutil.copyfile(SIGNIFY / "pciide.sys", drivers / "pciide.sys")
    shutil.copyfile(SIGNIFY / "DXCore.dll", system32 / "DXCore.dll")
    shutil.copyfile(FIXTURES / "cat_member_t64.exe", system32 / "cat_member_t64.exe")
    shutil.copyfile(FIXTURES / "cat_member_t64_tampered.exe", system32 / "t64_tampered.exe")
    (system32 / "readme.txt").write_text("not a PE\n")
    shutil.copyfile(FIXTURES / "fixtures.cat", catroot / "fixtures.cat")
    dxcore_cat = "115fe8649854ad531fb7ecd1318fbee6b33c9cbd78f02ed582092a96d5eb5899.cat"
    shutil.copyfile(SIGNIFY / dxcore_cat, catroot / dxcore_cat)
    (system32 / "config" / "SYSTEM").write_bytes(system_hive())
    blocklist = compile_policy(BLOCKLIST_XML.read_text(encoding="utf-8-sig"))
    with tempfile.TemporaryDirectory() as scratch:
        bare = Path(scratch) / "blocklist.bin"
        bare.write_bytes(blocklist)
        sign_pkcs7(bare, ci / "driversipolicy.p7b")
    own = compile_policy(IMAGE_POLICY_XML.read_text(encoding="utf-8"))
    (ci / "CiPolicies" / "Active" / f"{POLICY_GUID}.cip").write_bytes(own)
    tools = tree / "Program Files" / "Tool"
    tools.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(FIXTURES / "unsigned_removed.exe", tools / "tool.exe")


def _mbr(part_sectors: int) -> bytes:
    mbr = bytearray(512)
    entry = bytearray(16)
    entry[4] = 0x07  # NTFS / exFAT
    entry[8:12] = PART_START.to_bytes(4, "little")
    entry[12:16] = part_sectors.to_bytes(4, "little")
    entry[1:4] = entry[5:8] = b"\xfe\xff\xff"  # CHS unused: LBA addressing
    mbr[440:444] = (0x1C0DE1A7).to_bytes(4, "little")  # disk signature
    mbr[446:462] = entry
    mbr[510:512] = b"\x55\xaa"
    return bytes(mbr)


def build_ntfs(tree: Path, partition: Path, mount_point: Path, sectors: int) -> None:
    with partition.open("wb") as handle:
        handle.truncate(sectors * 512)
    subprocess.run(
        ["mkntfs", "-F", "-Q", "-q", "-L", "Windows", "-s", "512", "-p", str(PART_START),
         "-H", "0", "-S", "0", str(partition)],
        check=True, capture_output=True,
    )  # fmt: skip
    mount_point.mkdir(parents=True, exist_ok=True)
    subprocess.run(["ntfs-3g", str(partition), str(mount_point)], check=True, capture_output=True)
    try:
        for item in tree.iterdir():
            if item.is_dir():
                shutil.copytree(item, mount_point / item.name)
            else:
                shutil.copyfile(item, mount_point / item.name)
    finally:
        unmount = shutil.which("fusermount3") or shutil.which("fusermount")
        command = [unmount, "-u"] if unmount else ["umount"]
        subprocess.run([*command, str(mount_point)], check=True, capture_output=True)


def build(
    out: Path,
    extra: dict[str, Path] | None = None,
    part_sectors: int = PART_SECTORS,
    containers: tuple[str, ...] = CONTAINERS,
) -> ImageSet:
    """Build everything under ``out`` (created); raises CalledProcessError if a tool fails.

    ``extra`` adds files (volume-relative path -> source file), for the benchmark."""
    out.mkdir(parents=True, exist_ok=True)
    tree = out / "tree"
    if tree.exists():
        shutil.rmtree(tree)
    build_tree(tree)
    for rel, source in (extra or {}).items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, tree / rel)
    partition = out / "part.ntfs"
    build_ntfs(tree, partition, out / "mnt", part_sectors)
    raw = out / "disk.raw"
    total = PART_START + part_sectors + 2048
    with raw.open("wb") as handle:
        handle.write(_mbr(part_sectors))
        handle.seek(PART_START * 512)
        with partition.open("rb") as source:
            shutil.copyfileobj(source, handle, 1 << 20)
        handle.truncate(total * 512)
    partition.unlink()
    disks = {"raw": raw}
    for fmt in (c for c in ("vhdx", "vmdk", "qcow2") if c in containers):
        target = out / f"disk.{fmt}"
        subprocess.run(
            ["qemu-img", "convert", "-f", "raw", "-O", fmt, str(raw), str(target)],
            check=True, capture_output=True,
        )  # fmt: skip
        disks[fmt] = target
    if "E01" in containers:
        base = out / "disk"
        subprocess.run(
            ["ewfacquire", "-u", "-q", "-c", "none", "-f", "encase6", "-t", str(base), str(raw)],
            check=True, capture_output=True, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        disks["E01"] = out / "disk.E01"
    return ImageSet(tree, disks)


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else os.getcwd()) / "codeintegrity-image"
    result = build(target)
    for name, path in result.disks.items():
        print(f"{name}: {path} ({path.stat().st_size} bytes)")
