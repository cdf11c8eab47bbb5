"""Files met under more than one name in one run: their bytes are judged once.

A mounted Windows volume names many files twice: most of ``System32`` is hard links into
``WinSxS``, so a scan of ``Windows\\`` meets the same bytes under two paths. The walk marks a
file with more than one name (``st_nlink`` > 1) with its stat identity
(:attr:`~.walk.Target.linked`). The verification of the first name met is kept here, encoded
without path or policy decision (as the results cache keeps it); every later name with the same
identity reuses it with its own path, and gets its own policy decision, output line and events,
as if it had been judged.

Kept only what the results cache would keep, for the same reasons: not a report with a failed
primitive, not a file whose stat changed while it was judged or changed within the racy window
(a same-size rewrite within one timestamp tick leaves the stat unchanged), and not past the
report's chain boundary (the moment a verdict judged at "now" may change by itself).

Bounded: an entry goes once all the file's other names were met, and the oldest go first when
the kept reports exceed ``MAX_KEPT_BYTES`` (a report is 1-6 KB: 16 MiB holds a few thousand,
the System32 files a walk meets before it reaches their WinSxS names).
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

from .walk import RACY_WINDOW_NS, FileIdentity, file_identity

if TYPE_CHECKING:
    from .outcome import Encoded

MAX_KEPT_BYTES = 16 << 20  # of encoded report text


class LinkedFiles:
    """The encoded verifications of files with more than one name, by stat identity."""

    def __init__(
        self,
        max_bytes: int = MAX_KEPT_BYTES,
        *,
        racy_window_ns: int = RACY_WINDOW_NS,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        # identity -> (verification, names of the file not met yet)
        self._kept: OrderedDict[FileIdentity, tuple[Encoded, int]] = OrderedDict()
        self._bytes = 0
        self._max_bytes = max_bytes
        self._racy_window_ns = racy_window_ns
        self._clock_ns = clock_ns
        self.reused = 0  # names answered from an earlier name's verification

    def get(self, identity: FileIdentity, *, fixed_time: bool) -> Encoded | None:
        """The kept verification for ``identity``, unless the clock has passed its chain
        boundary (``fixed_time``: judged at a given moment, which no boundary moves)."""
        entry = self._kept.get(identity)
        if entry is None:
            return None
        encoded, left = entry
        boundary = encoded.boundary
        if not fixed_time and boundary is not None and boundary <= self._clock_ns() / 1e9:
            self._drop(identity)
            return None
        self.reused += 1
        if left <= 1:
            self._drop(identity)  # every other name met: it will not be asked for again
        else:
            self._kept[identity] = (encoded, left - 1)
        return encoded

    def keep(self, identity: FileIdentity, path: str, encoded: Encoded) -> None:
        """Keep ``encoded`` (just judged from ``path``, whose walk gave ``identity``) if the file
        is unchanged since and was not changed within the racy window."""
        if not encoded.storable:
            return  # a primitive that raised may work next time
        try:
            after = os.stat(path)  # noqa: PTH116 - a str path: no Path object per file
        except OSError:
            return
        if file_identity(after) != identity or after.st_nlink < 2:
            return
        if max(after.st_mtime_ns, after.st_ctime_ns) >= self._clock_ns() - self._racy_window_ns:
            return
        if identity in self._kept:
            self._drop(identity)
        self._kept[identity] = (encoded, after.st_nlink - 1)
        self._bytes += len(encoded.text)
        while self._bytes > self._max_bytes:
            self._drop(next(iter(self._kept)))

    def _drop(self, identity: FileIdentity) -> None:
        encoded, _ = self._kept.pop(identity)
        self._bytes -= len(encoded.text)
