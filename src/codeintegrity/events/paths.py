"""Paths: where the embedded event store lives by default, and the file names events carry.

1. ``$CODEINTEGRITY_HOME/events.sqlite3`` when that variable is set (any platform);
2. Windows: ``%LOCALAPPDATA%\\codeintegrity\\events.sqlite3``;
3. elsewhere: ``$XDG_STATE_HOME/codeintegrity/events.sqlite3``, falling back to
   ``~/.local/state/codeintegrity/events.sqlite3`` (XDG Base Directory: state data).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

STORE_FILE_NAME = "events.sqlite3"


def default_store_path(
    environ: Mapping[str, str] | None = None, *, platform: str | None = None
) -> Path:
    """The per-user store file (not created here)."""
    env = os.environ if environ is None else environ
    platform = platform or sys.platform
    home = env.get("CODEINTEGRITY_HOME")
    if home:
        return Path(home) / STORE_FILE_NAME
    if platform == "win32":
        local = env.get("LOCALAPPDATA")
        base = Path(local) if local else Path.home() / "AppData" / "Local"
        return base / "codeintegrity" / STORE_FILE_NAME
    state = env.get("XDG_STATE_HOME")
    # XDG: a relative path in the variable is invalid and must be ignored.
    base = Path(state) if state and Path(state).is_absolute() else Path.home() / ".local" / "state"
    return base / "codeintegrity" / STORE_FILE_NAME


# --- the file names written into events ------------------------------------------------------

NtPathMap = tuple[tuple[str, str], ...]  # (mount point, NT device), longest mount first

_WINDOWS_ABSOLUTE = ("\\", "/")  # plus drive letters, checked below


def parse_nt_path(spec: str) -> tuple[str, str]:
    """``MOUNT=\\Device\\HarddiskVolume3`` (the ``--nt-path`` syntax) as (mount, device);
    raises ValueError with a one-line reason."""
    mount, sep, device = spec.partition("=")
    if not sep or not mount or not device:
        raise ValueError(f"{spec!r}: expected MOUNT=\\Device\\HarddiskVolumeN")
    if not device.startswith("\\"):
        raise ValueError(f"{spec!r}: the NT path must start with a backslash (\\Device\\...)")
    # abspath, not resolve(): the mapping is lexical, a symlinked mount stays as named.
    return os.path.abspath(mount).rstrip("/") or "/", device.rstrip("\\")  # noqa: PTH100


def nt_path_map(specs: Iterable[str | tuple[str, str]]) -> NtPathMap:
    """Mappings from ``--nt-path`` values (or pairs), the most specific mount first."""
    pairs = [parse_nt_path(s) if isinstance(s, str) else s for s in specs]
    return tuple(sorted(pairs, key=lambda pair: len(pair[0]), reverse=True))


def event_path(path: str, mapping: NtPathMap = ()) -> str:
    """The file name an event carries (param1, FileNameBuffer, File Name).

    Under a mapped mount point: the NT form Windows writes (``\\Device\\HarddiskVolume3\\...``,
    backslashes). Otherwise the absolute path (a relative one is resolved; a Windows-style
    absolute path given on another system is kept as it is)."""
    if not (path[:1] in _WINDOWS_ABSOLUTE or (len(path) > 2 and path[1] == ":")):
        path = os.path.abspath(path)  # noqa: PTH100 (lexical, as the user named it)
    for mount, device in mapping:
        if path == mount or path.startswith(mount + "/") or mount == "/":
            rest = path[len(mount) :] if mount != "/" else path
            return device + rest.replace("/", "\\")
    return path
