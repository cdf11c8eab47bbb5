"""The Python floor for benchmarks/guard.py: a fanotify permission responder allowing everything.

Usage (root): python benchmarks/guard_floor.py PATH

The same loop as guard_floor.c, in Python: one read() of the group, then for every event one
write() of an allow and one close() of its fd. No path, no stat, no cache, no counters: what
the guard adds on top of this is the cost of its decisions; what this adds on top of the C
floor is the interpreter's.
"""

from __future__ import annotations

import os
import signal
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from codeintegrity.guard import fanotify as fan  # noqa: E402 - after the path is set

_METADATA = struct.Struct("=IBBHQii")
_RESPONSE = struct.Struct("=iI")


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: guard_floor.py PATH", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    group = fan.open_group()
    fan.fanotify_mark(
        group, fan.FAN_MARK_ADD | fan.FAN_MARK_FILESYSTEM, fan.PERMISSION_EVENTS, sys.argv[1]
    )
    print("guard_floor.py: ready", file=sys.stderr, flush=True)
    read, write, close, unpack_from = os.read, os.write, os.close, _METADATA.unpack_from
    allow = fan.FAN_ALLOW
    while True:
        data = read(group, 65536)
        offset = 0
        while offset < len(data):
            event_len, _v, _r, _m, mask, fd, _pid = unpack_from(data, offset)
            offset += event_len
            if fd < 0:
                continue
            if mask & fan.PERMISSION_EVENTS:
                write(group, _RESPONSE.pack(fd, allow))
            close(fd)


if __name__ == "__main__":
    sys.exit(main())
