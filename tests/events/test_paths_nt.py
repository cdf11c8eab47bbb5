"""File names in events: NT device paths under --nt-path mappings, absolute paths otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from codeintegrity.events.build import events_for_report
from codeintegrity.events.paths import event_path, nt_path_map, parse_nt_path

from .reports import HOST, denied_report, tampered_report

VOLUME = "\\Device\\HarddiskVolume3"


def test_a_mapped_mount_gives_the_nt_form_windows_writes() -> None:
    mapping = nt_path_map([f"/mnt/win={VOLUME}", "/mnt/win/Program Files=\\Device\\Other"])
    # The most specific mount wins; separators become backslashes.
    assert event_path("/mnt/win/Windows/System32/drivers/x.sys", mapping) == (
        "\\Device\\HarddiskVolume3\\Windows\\System32\\drivers\\x.sys"
    )
    assert (
        event_path("/mnt/win/Program Files/Sophos/a.dll", mapping)
        == "\\Device\\Other\\Sophos\\a.dll"
    )
    assert event_path("/mnt/winter/a.exe", mapping) == "/mnt/winter/a.exe"  # not under the mount


def test_without_a_mapping_the_path_is_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert event_path("sub/../a.exe") == str(tmp_path / "a.exe")
    assert event_path("C:\\Windows\\a.exe") == "C:\\Windows\\a.exe"  # already absolute (Windows)


def test_bad_mappings_are_refused_with_a_reason() -> None:
    for spec in ("/mnt/win", "=\\Device\\X", "/mnt/win=Device\\X"):
        with pytest.raises(ValueError, match="expected MOUNT|backslash"):
            parse_nt_path(spec)


def test_events_carry_the_nt_path_and_ecs_keeps_the_full_path(tmp_path: Path) -> None:
    host = HOST.with_nt_paths([f"{tmp_path}={VOLUME}"])
    path = str(tmp_path / "Program Files" / "Vendor" / "bad.exe")
    nt = VOLUME + "\\Program Files\\Vendor\\bad.exe"
    events = events_for_report(tampered_report(path), host=host)
    by_id = {e.event_id: e for e in events}
    assert by_id[5038].value("param1") == nt
    assert by_id[3033].value("FileNameBuffer") == nt
    assert by_id[3033].value("FileNameLength") == str(len(nt))
    assert by_id[5038].context_value("file.path") == path  # ECS file.path: the full path
    (block,) = [
        e
        for e in events_for_report(denied_report("enforce", path), host=host)
        if e.event_id == 3077
    ]
    assert block.value("File Name") == nt
