"""Who opened a file: the process behind a fanotify event, as the events name it.

Read from /proc before the open is answered (the opener is blocked in the kernel until then,
so its /proc entry is still there). A process that vanished anyway is named ``<pid N>``.
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..events.build import Host
    from ..events.model import Event

# Samba's and Windows' mapping of a Unix uid to a SID ("Unix User\\name").
UNIX_USER_SID_PREFIX = "S-1-22-1-"


@dataclass(frozen=True, slots=True)
class Opener:
    pid: int
    exe: str
    uid: int | None
    user_name: str

    @property
    def sid(self) -> str | None:
        return None if self.uid is None else f"{UNIX_USER_SID_PREFIX}{self.uid}"

    def host(self, base: Host) -> Host:
        """The events' Execution/Process fields: this process instead of the guard."""
        return replace(base, process_id=self.pid, process_name=self.exe, user_name=self.user_name)

    def stamp(self, events: list[Event]) -> list[Event]:
        """Set the opener's user as each event's UserID and add ECS process/user fields."""
        extra: tuple[tuple[str, str | int | bool], ...] = (
            ("process.pid", self.pid),
            ("process.executable", self.exe),
            ("user.name", self.user_name),
        )
        if self.uid is not None:
            extra += (("user.id", str(self.uid)),)
        return [replace(e, user_id=self.sid, context=e.context + extra) for e in events]


def opener_of(pid: int, proc: str = "/proc") -> Opener:
    try:
        exe = os.readlink(f"{proc}/{pid}/exe")  # noqa: PTH115 - str in, str out
    except OSError:
        exe = f"<pid {pid}>"
    uid = _effective_uid(f"{proc}/{pid}/status")
    return Opener(pid=pid, exe=exe, uid=uid, user_name=_user_name(uid))


def parse_status_uid(text: str) -> int | None:
    """The effective uid from /proc/PID/status (``Uid: real effective saved fs``)."""
    for line in text.splitlines():
        if line.startswith("Uid:"):
            fields = line.split()
            if len(fields) >= 3 and fields[2].isdigit():
                return int(fields[2])
            return None
    return None


def _effective_uid(status_path: str) -> int | None:
    try:
        with open(status_path, encoding="ascii", errors="replace") as handle:
            return parse_status_uid(handle.read(4096))
    except OSError:
        return None


@lru_cache(maxsize=256)
def _user_name(uid: int | None) -> str:
    if uid is None:
        return "-"
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
