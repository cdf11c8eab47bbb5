"""Process helpers for the scan tests."""

from __future__ import annotations

import os


def children(pid: int) -> set[int]:
    """The pids of ``pid``'s child processes (all its threads'), from /proc."""
    found: set[int] = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as handle:
            found.update(int(p) for p in handle.read().split())
    return found
