"""Files met under more than one name in one run: their bytes are judged once.

A mounted Windows volume names many files twice: most of ``System32`` is hard links into
``WinSxS``, so a scan of ``Windows\\`` meets the same bytes under two paths. The walk marks a
file with more than one name (``st_nlink`` > 1) with its stat identity
(:attr:`~.walk.Target.linked`). The verification of a name is kept here, encoded without path or
policy decision (as the results cache keeps it), when the file the engine opened (its ``fstat``)
has that identity; a later name whose path still has the identity reuses it with its own path,
and gets its own policy decision, output line and events, as if it had been judged.

The identity is the one of the bytes read, not of what the path names before or after: a
symbolic link or folder swapped while a file is judged cannot lend its verdict to the file's
other names. Not kept, as in the results cache: a report with a failed primitive, a file
changed within the racy window (a same-size rewrite within one timestamp tick leaves the stat
unchanged), and not reused past the report's chain boundary (the moment a verdict judged at
"now" may change by itself).

Bounded: an entry goes once the file's other names were met, and the oldest go first when the
kept reports exceed ``MAX_KEPT_BYTES`` (a report is 1-6 KB: 16 MiB holds a few thousand, the
System32 files a walk meets before it reaches their WinSxS names).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

from .walk import RACY_WINDOW_NS, FileIdentity

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

    def __contains__(self, identity: FileIdentity) -> bool:
        return identity in self._kept

    def get(self, identity: FileIdentity, *, fixed_time: bool) -> Encoded | None:
        """The kept verification for ``identity`` (a name of the file just met), unless the
        clock has passed its chain boundary (``fixed_time``: judged at a given moment, which no
        boundary moves)."""
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

    def keep(
        self, identity: FileIdentity, names: int, encoded: Encoded, *, since: int | None = None
    ) -> None:
        """Keep ``encoded``, judged from a file opened with ``identity`` (its ``fstat``) and
        ``names`` names, for the names not met yet. ``since``: when it was opened (ns), the
        moment the racy window is counted back from (else now)."""
        if not encoded.storable or names < 2 or identity in self._kept:
            return  # a primitive that raised may work next time; a name in flight came back
        reference = self._clock_ns() if since is None else since
        if max(identity[3], identity[4]) >= reference - self._racy_window_ns:
            return
        self._kept[identity] = (encoded, names - 1)
        self._bytes += len(encoded.text)
        while self._bytes > self._max_bytes:
            self._drop(next(iter(self._kept)))

    def _drop(self, identity: FileIdentity) -> None:
        encoded, _ = self._kept.pop(identity)
        self._bytes -= len(encoded.text)
