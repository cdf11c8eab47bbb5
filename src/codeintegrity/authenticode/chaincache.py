"""Chain outcomes already validated in this process, and the ones other workers of the same run
validated (their "news").

A chain is named by its trust store and the fingerprints of the certificates the signature
carries (:data:`Key`). A valid path stays valid at every moment inside the validity of all its
certificates (its window); a failure that no moment can change (no path to any anchor) holds at
every moment; any other failure is kept for its exact moment only.

Workers of one run (``verify --jobs``, ``image --jobs``) each validate what they meet first;
without sharing, each of N workers builds every distinct chain of the tree itself. A worker that
shares (:func:`share`) records what it validates; the pool carries those records to the other
workers (:func:`take_news`, :func:`learn`), which then find those chains here as if they had
validated them. Only what is keyed independently of a moment travels: valid paths with their
window and failures that hold at every moment. A record is the outcome as the validating worker
computed it, certificates as DER: workers are trusted with verdicts already (the parent takes
their reports as they are), and a record is no more than a verdict about a chain.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeAlias

from . import certcache

if TYPE_CHECKING:
    from ..findings import FindingCode
    from .chainrules import ChainFacts

# (trust store key, leaf fingerprint, fingerprints of the other certificates carried)
Key: TypeAlias = tuple[bytes, bytes, frozenset[bytes]]

_CACHE_SIZE = 4096
# Records waiting for the pool to take them. The pool takes them after every file, so this
# only bounds a worker whose records are never taken.
_MAX_NEWS = 1024


@dataclass(frozen=True, slots=True)
class Outcome:
    """What pyhanko and the signature-independent rules said of one path."""

    ok: bool
    code: FindingCode | None
    detail: str
    certs: tuple[Any, ...]
    facts: ChainFacts
    # No path to any anchor exists: the same at every moment, so cached without one.
    timeless: bool = False


@dataclass(frozen=True, slots=True)
class _Window:
    not_before: datetime
    not_after: datetime
    outcome: Outcome


@dataclass(frozen=True, slots=True)
class ChainNews:
    """One outcome validated by a worker, for the others (picklable: certificates as DER)."""

    key: Key
    ok: bool
    code: FindingCode | None
    detail: str
    ders: tuple[bytes, ...]
    facts: ChainFacts
    timeless: bool
    window: tuple[datetime, datetime] | None  # a valid path's; None for a failure


_success: OrderedDict[Key, list[_Window]] = OrderedDict()
_failure: OrderedDict[tuple[Any, ...], Outcome] = OrderedDict()
_lock = threading.Lock()
_stats = {"hits": 0, "misses": 0}
_sharing = False
_news: list[ChainNews] = []


def lookup(key: Key, moment: datetime) -> Outcome | None:
    """The outcome for ``key`` at ``moment``, if known here (counted as a hit or a miss)."""
    with _lock:
        outcome = None
        for window in _success.get(key, ()):
            if window.not_before <= moment <= window.not_after:
                _success.move_to_end(key)
                outcome = window.outcome
                break
        else:
            outcome = _failure.get(key) or _failure.get((*key, moment))
        _stats["hits" if outcome is not None else "misses"] += 1
    return outcome


def store(key: Key, moment: datetime, outcome: Outcome) -> None:
    """Remember ``outcome``, validated here for ``key`` at ``moment``."""
    window = _window_of(outcome) if outcome.ok else None
    _insert(key if window is not None or outcome.timeless else (*key, moment), outcome, window)
    if _sharing and (outcome.ok or outcome.timeless) and len(_news) < _MAX_NEWS:
        ders = tuple(certcache.der(cert) for cert in outcome.certs)
        _news.append(
            ChainNews(
                key,
                outcome.ok,
                outcome.code,
                outcome.detail,
                ders,
                outcome.facts,
                outcome.timeless,
                window,
            )
        )


def share(enabled: bool = True) -> None:
    """Record, from now on, what this process validates, for :func:`take_news` (or stop)."""
    global _sharing, _news
    _sharing = enabled
    if not enabled:
        _news = []


def take_news() -> list[ChainNews]:
    """The records made since the last call."""
    global _news
    taken, _news = _news, []
    return taken


def learn(news: Iterable[ChainNews]) -> None:
    """Take in what another worker validated; a chain known here already is left as it is."""
    for item in news:
        with _lock:
            if item.window is not None:
                known = any(w.not_before == item.window[0] for w in _success.get(item.key, ()))
            else:
                known = item.key in _failure
        if known:
            continue
        certs = tuple(_certificate(der) for der in item.ders)
        outcome = Outcome(item.ok, item.code, item.detail, certs, item.facts, item.timeless)
        _insert(item.key, outcome, item.window)


def _insert(
    key: tuple[Any, ...], outcome: Outcome, window: tuple[datetime, datetime] | None
) -> None:
    """A valid path under its chain's key, for its window; a failure under ``key`` (the chain's
    key, with the moment appended for a failure bound to one moment)."""
    with _lock:
        if window is not None:
            _success.setdefault(key, []).append(_Window(*window, outcome))
            _trim(_success)
        else:
            _failure[key] = outcome
            _trim(_failure)


def _certificate(der: bytes) -> Any:
    from asn1crypto import x509

    return certcache.intern(x509.Certificate.load(der))


def _window_of(outcome: Outcome) -> tuple[datetime, datetime]:
    """When a valid path stays valid: inside the validity of every certificate but the anchor
    (pyhanko does not check an anchor's validity period)."""
    bounded = outcome.certs[:-1] or outcome.certs
    return (
        max(_aware(c.not_valid_before) for c in bounded),
        min(_aware(c.not_valid_after) for c in bounded),
    )


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _trim(cache: OrderedDict[Any, Any]) -> None:
    while len(cache) > _CACHE_SIZE:
        cache.popitem(last=False)


def stats() -> dict[str, int]:
    return dict(_stats)


def clear() -> None:
    global _news
    with _lock:
        _success.clear()
        _failure.clear()
        _stats.update(hits=0, misses=0)
        _news = []
