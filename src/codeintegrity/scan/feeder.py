"""The source of a run (a walk, a --files-from pipe) taken in a thread, so the parent can hand
out work, collect results and write output while the source is still producing. Used by the
worker pool (:mod:`.pool`) and the Dask backend."""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Iterable

END = object()  # the last item a Feeder gives: its source is exhausted


class Feeder:
    """Runs the source (a walk) in a thread, so the parent can hand out work, collect results
    and write output while the walk (or a --files-from pipe) is still producing.

    A deque, not a queue.Queue: appends and pops need no lock (a Queue's condition variable
    costs the parent a lock hand-off per file). The parent is woken through a pipe when the
    deque goes from empty to not empty: it sleeps only after finding it empty, and the first
    append after that sees a length of one. Bounded: the walk pauses while ``window`` items
    wait."""

    def __init__(self, items: Iterable[object], window: int) -> None:
        self._items: deque[object] = deque()
        self._window = window
        self._closing = False
        self.wake, self._wake_w = os.pipe()
        os.set_blocking(self.wake, False)
        os.set_blocking(self._wake_w, False)
        self._thread = threading.Thread(
            target=self._run, args=(items,), name="codeintegrity-walk", daemon=True
        )
        self._thread.start()

    def _run(self, items: Iterable[object]) -> None:
        try:
            for item in items:
                while len(self._items) >= self._window and not self._closing:
                    time.sleep(0.002)  # the workers are behind: the walk waits for them
                self._put(item)
        finally:
            self._put(END)

    def _put(self, item: object) -> None:
        self._items.append(item)
        if len(self._items) == 1:
            try:
                os.write(self._wake_w, b"x")
            except OSError:
                pass  # full (wake-ups pending already) or closed (the run is over)

    def pending(self) -> bool:
        return bool(self._items)

    def take(self) -> object | None:
        try:
            return self._items.popleft()
        except IndexError:
            return None

    def drained(self) -> None:
        try:
            while os.read(self.wake, 4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def close(self) -> None:
        self._closing = True
        if self._thread.is_alive():
            return  # still blocked in the walk (a --files-from pipe): it may still signal
        for fd in (self.wake, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
