"""Where the embedded event store lives by default.

1. ``$CODEINTEGRITY_HOME/events.sqlite3`` when that variable is set (any platform);
2. Windows: ``%LOCALAPPDATA%\\codeintegrity\\events.sqlite3``;
3. elsewhere: ``$XDG_STATE_HOME/codeintegrity/events.sqlite3``, falling back to
   ``~/.local/state/codeintegrity/events.sqlite3`` (XDG Base Directory: state data).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
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
