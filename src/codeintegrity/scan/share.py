"""What the workers of one pool tell each other, through the parent: work one worker did that
the others need not do again (the certificate chains it validated).

Each worker has a news pipe beside its task pipe. The parent relays what a worker reports
with its results to every other worker, and writes without ever blocking: what a busy worker's
pipe cannot take now waits in the parent (bounded) and goes at the next chance. A worker reads
its news, without blocking, before each task. News only saves work: a worker that has not yet
heard does the work itself, so a late or dropped message costs time, never a verdict.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_MAX_WAITING = 1 << 20  # news the parent holds for one worker that is not reading it
# Items kept for a worker started later (one replacing a dead one), or sent with one Dask task:
# a chain record is some KB (its certificates as DER), so this stays within a few MB.
MAX_RELAYED = 512
_HEADER = 4


@dataclass(frozen=True)
class Share:
    """The worker-side hooks: ``start`` once in each worker; ``take`` after each task (what
    this worker has to tell, picklable); ``learn`` with what the others told."""

    start: Callable[[], None]
    take: Callable[[], list[Any]]
    learn: Callable[[list[Any]], None]


def validated_chains() -> Share:
    """Share the certificate chains each worker validates (see :mod:`..authenticode.chaincache`)."""
    from ..authenticode import chaincache

    return Share(chaincache.share, chaincache.take_news, chaincache.learn)


# News only saves work: a worker that cannot take it in, or cannot say what it did, goes on
# without it; the file it is judging never pays for it.


def learn_quietly(share: Share, items: list[Any]) -> None:
    """``share.learn(items)``; news that cannot be taken in is dropped."""
    if not items:
        return
    try:
        share.learn(items)
    except Exception:  # noqa: BLE001, S110 - see above
        pass


def take_quietly(share: Share) -> list[Any]:
    """``share.take()``, or nothing when it fails or does not pickle (a result must never fail
    to travel because of the news beside it)."""
    try:
        told = share.take()
        pickle.dumps(told, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # noqa: BLE001 - see above
        return []
    return told


class NewsPipe:
    """One worker's news pipe. Made in the parent before the fork; each side then closes the
    end it does not use (:meth:`in_parent`, :meth:`in_worker`)."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        self._waiting = bytearray()  # parent: written to the pipe when it has room
        self._received = bytearray()  # worker: a message not yet complete
        self.dropped = 0  # parent: items not sent because the worker never read

    # --- the parent's side

    def in_parent(self) -> None:
        os.close(self._read)

    def post(self, items: list[Any]) -> None:
        if not items:
            return
        data = pickle.dumps(items, protocol=pickle.HIGHEST_PROTOCOL)
        if len(self._waiting) + len(data) > _MAX_WAITING:
            self.dropped += len(items)  # the worker is stuck: it will do the work itself
            return
        self._waiting += len(data).to_bytes(_HEADER, "little") + data
        self.flush()

    def flush(self) -> None:
        """Write what the pipe takes now; the rest waits for the next call."""
        while self._waiting:
            try:
                written = os.write(self._write, self._waiting[: 1 << 16])
            except BlockingIOError:
                return
            except OSError:  # the worker is gone
                self._waiting.clear()
                return
            del self._waiting[:written]

    def close(self) -> None:
        try:
            os.close(self._write)
        except OSError:
            pass

    # --- the worker's side

    def in_worker(self) -> None:
        os.close(self._write)

    def receive(self) -> list[Any]:
        """Every item that has arrived whole, without waiting."""
        while True:
            try:
                chunk = os.read(self._read, 1 << 16)
            except BlockingIOError:
                break
            if not chunk:  # the parent closed its end
                break
            self._received += chunk
        items: list[Any] = []
        while len(self._received) >= _HEADER:
            size = int.from_bytes(self._received[:_HEADER], "little")
            if len(self._received) < _HEADER + size:
                break
            message = self._received[_HEADER : _HEADER + size]
            items.extend(pickle.loads(message))  # noqa: S301 - written by our own parent
            del self._received[: _HEADER + size]
        return items


class NewsLog:
    """The parent's record of what workers told, for workers that start later."""

    def __init__(self) -> None:
        self.items: list[Any] = []

    def add(self, items: list[Any]) -> None:
        room = MAX_RELAYED - len(self.items)
        if room > 0:
            self.items.extend(items[:room])
