"""fanotify(7) through ctypes: the two system calls, the constants we use, and a pure parser
for the event records the kernel writes.

The parser reads ``struct fanotify_event_metadata`` records through the one bounds-checked
:class:`~codeintegrity.reader.Reader`: a record whose lengths do not add up raises
:class:`FanotifyRecordError` instead of walking off the buffer (the kernel is trusted, but a
short read or a future metadata version must not turn into a wrong fd being answered).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct
from collections.abc import Sequence

from ..errors import CIError, MalformedError
from ..reader import Reader

# fanotify_init flags
FAN_CLOEXEC = 0x00000001
FAN_NONBLOCK = 0x00000002
FAN_CLASS_CONTENT = 0x00000004

# event masks
FAN_MODIFY = 0x00000002
FAN_CLOSE_WRITE = 0x00000008
FAN_Q_OVERFLOW = 0x00004000
FAN_OPEN_PERM = 0x00010000
FAN_OPEN_EXEC_PERM = 0x00040000
PERMISSION_EVENTS = FAN_OPEN_PERM | FAN_OPEN_EXEC_PERM

# fanotify_mark flags
FAN_MARK_ADD = 0x00000001
FAN_MARK_REMOVE = 0x00000002
FAN_MARK_MOUNT = 0x00000010
FAN_MARK_FILESYSTEM = 0x00000100

# responses
FAN_ALLOW = 0x01
FAN_DENY = 0x02

FAN_NOFD = -1
FANOTIFY_METADATA_VERSION = 3

_METADATA = struct.Struct("=IBBHQii")  # event_len, vers, reserved, metadata_len, mask, fd, pid
METADATA_SIZE = _METADATA.size  # 24
_RESPONSE = struct.Struct("=iI")
RESPONSE_SIZE = _RESPONSE.size  # 8
# fanotify takes one response per write(); writev() hands each iovec to it as its own write,
# so one system call answers a whole batch. Linux's IOV_MAX is 1024.
_IOV_MAX = 1024


class FanotifyError(CIError):
    """fanotify is unavailable here or a call on it failed."""


class FanotifyRecordError(MalformedError):
    """An event record whose lengths or version do not make sense."""


def event_records(data: bytes | bytearray | memoryview) -> list[tuple[int, int, int]]:
    """Every event record in one ``read()`` of a fanotify descriptor, as plain
    ``(mask, fd, pid)`` tuples (the guard's hot path).

    Raises :class:`FanotifyRecordError` for a record that is too short, overruns the buffer or
    has another metadata version. Records already parsed before a bad one are lost with it, so
    the caller closes and answers nothing it cannot name (the kernel allows on group close).

    A group without FID reporting (ours) gets bare 24-byte records: when the read is a whole
    number of them, ``iter_unpack`` reads them in one pass (it cannot read past the buffer) and
    each one's lengths and version are still checked; anything else takes the bounds-checked
    walk of :func:`_walk_records`, which names the bad field."""
    if len(data) % METADATA_SIZE == 0:
        records = [
            (mask, fd, pid)
            for event_len, version, _reserved, metadata_len, mask, fd, pid in _METADATA.iter_unpack(
                data
            )
            if event_len == METADATA_SIZE
            and metadata_len == METADATA_SIZE
            and version == FANOTIFY_METADATA_VERSION
        ]
        if len(records) * METADATA_SIZE == len(data):
            return records
    return _walk_records(data)


def _walk_records(data: bytes | bytearray | memoryview) -> list[tuple[int, int, int]]:
    reader = Reader(data, FanotifyRecordError)
    events: list[tuple[int, int, int]] = []
    offset = 0
    end = len(reader)
    view, unpack, require = reader.view, _METADATA.unpack_from, reader.require
    while offset < end:
        require(offset, METADATA_SIZE, "fanotify_event_metadata")
        event_len, version, _reserved, metadata_len, mask, fd, pid = unpack(view, offset)
        if version != FANOTIFY_METADATA_VERSION:
            raise reader.fail(offset + 4, "vers", f"metadata version {version}, expected 3")
        if metadata_len < METADATA_SIZE or event_len < metadata_len:
            raise reader.fail(
                offset, "event_len", f"event_len {event_len} / metadata_len {metadata_len}"
            )
        require(offset, event_len, "fanotify event")
        events.append((mask, fd, pid))
        offset += event_len
    return events


def response_bytes(fd: int, allow: bool) -> bytes:
    """``struct fanotify_response`` answering the permission event on ``fd``."""
    return _RESPONSE.pack(fd, FAN_ALLOW if allow else FAN_DENY)


def write_responses(group: int, responses: Sequence[bytes]) -> list[tuple[int, OSError]]:
    """Write every response (from :func:`response_bytes`) with as few system calls as the
    kernel allows; returns the indexes of the ones it did not take, with the error (ENOENT:
    the opener is gone). The kernel stops a writev() at the first response it refuses and
    reports what it took before, so the refused one is set aside and the rest written again."""
    refused: list[tuple[int, OSError]] = []
    start, count = 0, len(responses)
    while start < count:
        try:
            if count - start == 1:
                written = os.write(group, responses[start])
            else:
                written = os.writev(group, responses[start : start + _IOV_MAX])
        except OSError as exc:
            refused.append((start, exc))
            start += 1
            continue
        start += max(1, written // RESPONSE_SIZE)
    return refused


_libc: ctypes.CDLL | None = None


def _lib() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        lib.fanotify_init.argtypes = [ctypes.c_uint, ctypes.c_uint]
        lib.fanotify_init.restype = ctypes.c_int
        lib.fanotify_mark.argtypes = [
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint64,
            ctypes.c_int,
            ctypes.c_char_p,
        ]
        lib.fanotify_mark.restype = ctypes.c_int
        _libc = lib
    return _libc


def _raise(call: str) -> None:
    err = ctypes.get_errno()
    raise FanotifyError(f"{call}: {os.strerror(err)} (errno {err})")


def fanotify_init(flags: int, event_f_flags: int) -> int:
    try:
        lib = _lib()
    except (OSError, AttributeError) as exc:  # no libc or no fanotify_init symbol
        raise FanotifyError(f"fanotify is not available: {exc}") from None
    fd: int = lib.fanotify_init(flags, event_f_flags)
    if fd < 0:
        _raise("fanotify_init")
    return fd


def fanotify_mark(fan_fd: int, flags: int, mask: int, path: str) -> None:
    result = _lib().fanotify_mark(fan_fd, flags, mask, -100, os.fsencode(path))  # AT_FDCWD
    if result < 0:
        _raise(f"fanotify_mark({path})")


def open_group(*, nonblocking: bool = False) -> int:
    """A content-class group (permission events allowed) handing over read-only fds;
    ``nonblocking``: a read() with no event waiting fails with EAGAIN instead of sleeping."""
    return fanotify_init(
        FAN_CLOEXEC | FAN_CLASS_CONTENT | (FAN_NONBLOCK if nonblocking else 0),
        os.O_RDONLY | os.O_LARGEFILE | os.O_CLOEXEC,
    )


def raise_fd_limit(wanted: int) -> None:
    """Every pending open holds one fd: make room for a full queue (up to the hard limit)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def probe() -> str | None:
    """None when permission events can be used here, else the reason they cannot."""
    try:
        fd = open_group()
    except FanotifyError as exc:
        return str(exc)
    os.close(fd)
    return None
