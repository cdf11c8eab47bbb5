"""The SYSTEM hive reader and the ImagePath rules (pure: bytes and strings in)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from codeintegrity.image.paths import device_name, driver_image_path, nt_path, windows_path
from codeintegrity.image.registry import HiveError, parse_system_hive

from .imagedata import COMPUTER_NAME, system_hive
from .regf_writer import Key, build_hive


@pytest.mark.parametrize(
    ("image_path", "expected"),
    [
        (r"\SystemRoot\System32\drivers\x.sys", "Windows/System32/drivers/x.sys"),
        (r"System32\drivers\x.sys", "Windows/System32/drivers/x.sys"),
        (r"system32\DRIVERS\x.sys", "Windows/system32/DRIVERS/x.sys"),
        (r"\??\C:\Windows\System32\drivers\x.sys", "Windows/System32/drivers/x.sys"),
        (r"%SystemRoot%\System32\drivers\x.sys", "Windows/System32/drivers/x.sys"),
        (r'"C:\Program Files\Vendor\x.sys"', "Program Files/Vendor/x.sys"),
        (r"\Windows\System32\x.sys", "Windows/System32/x.sys"),
        (None, "Windows/System32/drivers/svc.sys"),
        ("", "Windows/System32/drivers/svc.sys"),
    ],
)
def test_driver_image_path(image_path, expected):
    assert driver_image_path(image_path, "svc") == expected


def test_path_forms():
    rel = "Windows/System32/drivers/x.sys"
    assert windows_path(rel) == r"C:\Windows\System32\drivers\x.sys"
    assert nt_path(rel, device_name(3)) == r"\Device\HarddiskVolume3\Windows\System32\drivers\x.sys"


@pytest.mark.skipif(
    shutil.which("hivexget") is None, reason="hivexget (libhivex-bin) not installed"
)
def test_fixture_hive_reads_the_same_with_hivex(tmp_path):
    """Our regf writer checked by an independent reader, then our reader checked against it."""
    hive = tmp_path / "SYSTEM"
    hive.write_bytes(system_hive())

    def get(key: str, value: str) -> str:
        out = subprocess.run(["hivexget", str(hive), key, value], capture_output=True, check=True)
        return out.stdout.decode().strip()

    name = get(r"ControlSet001\Control\ComputerName\ComputerName", "ComputerName")
    assert name == COMPUTER_NAME
    assert get(r"ControlSet001\Services\BadFlt", "Start") == "1"
    parsed = parse_system_hive(hive.read_bytes())
    assert parsed.computer_name == name
    bad = next(s for s in parsed.services if s.name == "BadFlt")
    assert bad.image_path == get(r"ControlSet001\Services\BadFlt", "ImagePath")


def test_system_hive_facts():
    parsed = parse_system_hive(system_hive())
    assert parsed.control_set == "ControlSet001"
    assert (parsed.blocklist_enabled, parsed.hvci_enabled) == (1, 1)
    assert [s.name for s in parsed.services] == [
        "BadFlt", "Ghost", "OldDrv", "pciide", "Spooler", "WinDivert"
    ]  # fmt: skip
    # Disabled drivers and Win32 services are not loaded at boot.
    assert [s.name for s in parsed.drivers_to_start()] == ["BadFlt", "Ghost", "pciide", "WinDivert"]
    assert next(s for s in parsed.services if s.name == "pciide").start_name == "boot"


def test_current_control_set_is_followed():
    root = Key("ROOT")
    root.key("Select").set_dword("Current", 2)
    root.key(r"ControlSet001\Control\ComputerName\ComputerName").set_sz("ComputerName", "OLD")
    root.key(r"ControlSet002\Control\ComputerName\ComputerName").set_sz("ComputerName", "NEW")
    parsed = parse_system_hive(build_hive(root))
    assert (parsed.control_set, parsed.computer_name) == ("ControlSet002", "NEW")
    assert parsed.services == [] and parsed.warnings


@pytest.mark.parametrize("data", [b"", b"regf" + b"\0" * 100, b"\xff" * 8192])
def test_damaged_hive_is_a_one_line_error(data):
    with pytest.raises(HiveError, match="SYSTEM hive does not parse"):
        parse_system_hive(data)


def dirty(hive: bytes, fix_checksum: bool = True) -> bytes:
    """The hive as a crash mid-write leaves it: primary sequence number one ahead of the
    secondary (Windows rewrites the base block, checksum included, before the data)."""
    import struct

    data = bytearray(hive)
    primary, secondary = struct.unpack_from("<II", data, 4)
    assert primary == secondary
    struct.pack_into("<I", data, 4, primary + 1)
    if fix_checksum:
        checksum = 0
        for offset in range(0, 508, 4):
            checksum ^= struct.unpack_from("<I", data, offset)[0]
        struct.pack_into("<I", data, 508, checksum or 1)
    return bytes(data)


def test_a_clean_hive_and_a_dirty_one():
    import io

    from dissect.regf import regf

    clean = parse_system_hive(system_hive())
    assert clean.base_block is not None and not clean.base_block.dirty
    assert clean.base_block.checksum_ok
    pending = dirty(system_hive())
    state = parse_system_hive(pending).base_block
    assert state is not None and state.dirty and state.checksum_ok
    assert state.primary_sequence == state.secondary_sequence + 1
    # dissect.regf, an independent reader, sees the same pending transaction.
    assert regf.RegistryHive(io.BytesIO(pending)).in_transaction
    assert not regf.RegistryHive(io.BytesIO(system_hive())).in_transaction
    # Same sequence numbers, damaged base block: dirty too (the checksum says so).
    damaged = bytearray(system_hive())
    damaged[0x30] ^= 0xFF  # inside the base block's FileName field
    state = parse_system_hive(bytes(damaged)).base_block
    assert state is not None and state.dirty and not state.checksum_ok


def test_base_block_state_of_a_short_file():
    from codeintegrity.image.registry import MalformedBaseBlock, base_block_state

    with pytest.raises(MalformedBaseBlock, match="base block checksum"):
        base_block_state(system_hive()[:300])
