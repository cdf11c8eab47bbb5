"""VS_VERSION_INFO parser: checked against pefile on real files, and fuzzed."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codeintegrity.errors import MalformedImage
from codeintegrity.pe.layout import parse_pe
from codeintegrity.pe.versioninfo import MAX_KEY_CHARS, _key, parse_version_info
from codeintegrity.reader import Reader

from ..conftest import FIXTURES, SAMPLES, SIGNIFY

REAL = [
    SIGNIFY / "pciide.sys",
    SIGNIFY / "kdbazis.dll",
    SAMPLES / "signed" / "pypi__msvc_runtime-14.44.35112-cp311-cp311-win_amd64" / "msvcp140_1.dll",
    FIXTURES / "t64_sha256.exe",
]


@pytest.mark.parametrize("path", REAL, ids=lambda p: p.name)
def test_values_match_pefile(path: Path) -> None:
    pefile = pytest.importorskip("pefile")  # an independent parser as the oracle
    data = path.read_bytes()
    ours = parse_version_info(data, parse_pe(data))
    assert ours is not None
    pe = pefile.PE(data=data)
    fixed = pe.VS_FIXEDFILEINFO[0]
    version = (
        f"{fixed.FileVersionMS >> 16}.{fixed.FileVersionMS & 0xFFFF}."
        f"{fixed.FileVersionLS >> 16}.{fixed.FileVersionLS & 0xFFFF}"
    )
    strings = {}
    for info in pe.FileInfo[0]:
        if info.Key == b"StringFileInfo":
            table = info.StringTable[0]
            strings = {k.decode(): v.decode() for k, v in table.entries.items()}
    assert ours.file_version == version
    assert ours.original_file_name == strings.get("OriginalFilename", "")
    assert ours.internal_name == strings.get("InternalName", "")
    assert ours.file_description == strings.get("FileDescription", "")
    assert ours.product_name == strings.get("ProductName", "")


def test_pciide_values() -> None:
    data = (SIGNIFY / "pciide.sys").read_bytes()
    info = parse_version_info(data, parse_pe(data))
    assert info is not None
    assert info.to_dict() == {
        "original_file_name": "pciide.sys",
        "internal_name": "pciide.sys",
        "file_description": "Generic PCI IDE Bus Driver",
        "product_name": "Microsoft® Windows® Operating System",
        "file_version": "6.1.7600.16385",
    }


def test_a_file_without_version_resource_gives_none() -> None:
    data = (FIXTURES / "fbx64_unsigned.efi").read_bytes()
    assert parse_version_info(data, parse_pe(data)) is None


def test_mutated_resources_never_raise() -> None:
    """Byte flips over the resource area: a result or None, never an exception."""
    data = (SIGNIFY / "pciide.sys").read_bytes()
    image = parse_pe(data)
    start = data.find("VS_VERSION_INFO".encode("utf-16-le")) - 6
    rng = random.Random(12)
    for _ in range(1500):
        mutated = bytearray(data)
        for _ in range(rng.randint(1, 6)):
            at = rng.randrange(max(0, start - 512), min(len(data), start + 1024))
            mutated[at] = rng.randrange(256)
        result = parse_version_info(bytes(mutated), image)
        assert result is None or isinstance(result.file_version, str)


def _key_unit_by_unit(data: bytes, at: int, end: int) -> tuple[str, int] | None:
    """The key's definition, one UTF-16 unit at a time (None: not terminated in time)."""
    units = []
    for i in range(MAX_KEY_CHARS):
        if at + 2 * i + 2 > end:
            return None
        unit = int.from_bytes(data[at + 2 * i : at + 2 * i + 2], "little")
        if unit == 0:
            raw = b"".join(u.to_bytes(2, "little") for u in units)
            return raw.decode("utf-16-le", "replace"), at + 2 * i + 2
        units.append(unit)
    return None


def _key_or_none(data: bytes, at: int, end: int) -> tuple[str, int] | None:
    try:
        return _key(Reader(data, MalformedImage), at, end)
    except MalformedImage:
        return None


def test_a_nul_pair_across_two_units_does_not_end_a_key() -> None:
    # "AĀ": 41 00 | 00 01 holds 00 00 at an odd offset, inside the key.
    data = b"\xff\xff" + "AĀ".encode("utf-16-le") + b"\0\0" + b"tail"
    assert _key(Reader(data, MalformedImage), 2, len(data)) == ("AĀ", 8)


def test_a_key_without_its_nul_before_the_block_end_is_malformed() -> None:
    data = "Key".encode("utf-16-le") + b"\0\0"
    with pytest.raises(MalformedImage):
        _key(Reader(data, MalformedImage), 0, len(data) - 1)
    longest = "k" * MAX_KEY_CHARS
    with pytest.raises(MalformedImage):
        _key(Reader((longest + "\0").encode("utf-16-le"), MalformedImage), 0, 2 * MAX_KEY_CHARS + 2)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600), st.integers(0, 40), st.integers(0, 620))
def test_key_agrees_with_reading_unit_by_unit(data: bytes, at: int, end: int) -> None:
    end = min(end, len(data))
    assert _key_or_none(data, at, end) == _key_unit_by_unit(data, at, end)
