"""Notifications in and out of a guard's loop: systemd's readiness protocol (sd_notify)
without libsystemd, one datagram to NOTIFY_SOCKET; and the wake-up pipe a signal handler
writes to (``signal.set_wakeup_fd``)."""

from __future__ import annotations

import os
import socket


def sd_notify(message: str, environ: dict[str, str] | None = None) -> bool:
    """Send ``message`` (e.g. ``READY=1``) when run by systemd; False when not or on error."""
    address = (environ if environ is not None else os.environ).get("NOTIFY_SOCKET")
    if not address or address[0] not in "/@":
        return False
    target = "\0" + address[1:] if address[0] == "@" else address  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message.encode(), target)
    except OSError:
        return False
    return True


def drain(fd: int) -> None:
    """Read a non-blocking wake-up pipe empty (its bytes only say "look again")."""
    try:
        while os.read(fd, 512):
            pass
    except (BlockingIOError, InterruptedError):
        pass
