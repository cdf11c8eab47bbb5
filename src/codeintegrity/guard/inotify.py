"""inotify(7) through ctypes, and a pure parser for the ``struct inotify_event`` records."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct
from dataclasses import dataclass

from ..errors import CIError, MalformedError
from ..reader import Reader

IN_MODIFY = 0x00000002
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_ISDIR = 0x40000000
IN_NONBLOCK = 0x00000800
IN_CLOEXEC = 0x00080000

WATCH_MASK = IN_CREATE | IN_CLOSE_WRITE | IN_MOVED_TO | IN_MODIFY | IN_DELETE_SELF | IN_ONLYDIR

_HEADER = struct.Struct("=iIII")  # wd, mask, cookie, len
HEADER_SIZE = _HEADER.size
_MAX_NAME = 4096  # NAME_MAX is 255; the kernel pads, never beyond this


class InotifyError(CIError):
    """inotify cannot be used (no support, watch limit reached, ...)."""


class InotifyRecordError(MalformedError):
    """An inotify record whose length overruns the buffer."""


@dataclass(frozen=True, slots=True)
class InotifyEvent:
    wd: int
    mask: int
    cookie: int
    name: str  # decoded with surrogateescape: file names are bytes


def parse_inotify(data: bytes | bytearray | memoryview) -> list[InotifyEvent]:
    reader = Reader(data, InotifyRecordError)
    events: list[InotifyEvent] = []
    offset, end = 0, len(reader)
    while offset < end:
        reader.require(offset, HEADER_SIZE, "inotify_event")
        wd, mask, cookie, length = _HEADER.unpack_from(reader.view, offset)
        if length > _MAX_NAME:
            raise reader.fail(offset + 12, "len", f"name length {length} is not plausible")
        reader.require(offset + HEADER_SIZE, length, "name")
        raw = bytes(reader.view[offset + HEADER_SIZE : offset + HEADER_SIZE + length])
        name = os.fsdecode(raw.split(b"\0", 1)[0])
        events.append(InotifyEvent(wd=wd, mask=mask, cookie=cookie, name=name))
        offset += HEADER_SIZE + length
    return events


class Inotify:
    """One inotify instance: add watches, read events."""

    def __init__(self) -> None:
        lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        lib.inotify_init1.argtypes = [ctypes.c_int]
        lib.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self._lib = lib
        self.fd = lib.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self.fd < 0:
            err = ctypes.get_errno()
            raise InotifyError(f"inotify_init1: {os.strerror(err)}")

    def add_watch(self, path: str, mask: int = WATCH_MASK) -> int:
        wd: int = self._lib.inotify_add_watch(self.fd, os.fsencode(path), mask)
        if wd < 0:
            err = ctypes.get_errno()
            raise InotifyError(f"inotify_add_watch({path}): {os.strerror(err)}")
        return wd

    def read(self) -> list[InotifyEvent]:
        try:
            data = os.read(self.fd, 64 * 1024)
        except BlockingIOError:
            return []
        return parse_inotify(data)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
