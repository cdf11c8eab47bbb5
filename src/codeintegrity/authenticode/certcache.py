"""Per-process memory of certificates already seen, keyed by their DER.

A tree scan meets the same handful of signing chains thousands of times, and every file carries
its own copy of their certificates. Parsing them again, normalising their names for comparison
(asn1crypto's RFC 4518 string preparation) and building their report facts cost several times
the hashing of a small file. What is cached here is a pure function of the certificate's bytes:

- the parsed certificate itself (the first copy seen stands for every later byte-identical one,
  so asn1crypto's lazily parsed fields and extensions are parsed once);
- the comparison forms of a Name (``Name.hashable``, and what ``Name.__eq__`` compares), keyed
  by the Name's DER;
- the report's :class:`CertInfo`;
- the public key as ``cryptography`` loads it (to check each file's own signature with it).

Nothing that depends on a signature or a moment (time validity, timestamps, revocation, the
chain rules a timestamp exempts from) is cached here. Every cache is a bounded LRU behind a lock;
failures are never cached (they are recomputed, and raise, each time).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from ..report import CertInfo

K = TypeVar("K")
V = TypeVar("V")

# Distinct certificates in a run are few (a Windows folder has some hundreds); a fully parsed
# asn1crypto certificate is some tens of KB, so these bounds keep the caches to a few MB.
MAX_CERTIFICATES = 1024
MAX_NAMES = 4096
_ASN1_ERRORS = (ValueError, TypeError, KeyError, IndexError, OverflowError)


class LRU(Generic[K, V]):
    """A bounded, thread-safe least-recently-used map. ``value`` computes a missing entry
    outside the lock (two threads may both compute it; the first stored wins)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: K, compute: Callable[[], V]) -> V:
        with self._lock:
            found = self._items.get(key, _MISSING)
            if found is not _MISSING:
                self._items.move_to_end(key)
                self.hits += 1
                return found
            self.misses += 1
        value = compute()  # may raise: nothing is stored then
        with self._lock:
            stored = self._items.setdefault(key, value)
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return stored

    def peek(self, key: K) -> V | None:
        """The entry for ``key`` if present (no recency update, no statistics)."""
        with self._lock:
            return self._items.get(key)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._items)


_MISSING: Any = object()
# Keys are the certificates' (and names') own DER bytes: exact, and independent of which hash
# algorithms the crypto provider allows (hashlib may refuse one; the verdict says so elsewhere).
_certificates: LRU[bytes, Any] = LRU(MAX_CERTIFICATES)
_names: LRU[bytes, str] = LRU(MAX_NAMES)
_name_keys: LRU[bytes, tuple[Any, ...]] = LRU(MAX_NAMES)
_infos: LRU[bytes, CertInfo] = LRU(MAX_CERTIFICATES)
_keys: LRU[bytes, Any] = LRU(MAX_CERTIFICATES)
# id of an interned certificate -> [the certificate, its DER, its SHA-256 once asked]. The
# entry holds the certificate, so its id cannot be reused while the entry lives.
_known: LRU[int, list[Any]] = LRU(MAX_CERTIFICATES)


def der(cert: Any) -> bytes:
    """The certificate's encoding, remembered for interned certificates: ``dump()`` of a parsed
    asn1crypto value walks all its parsed fields to see whether one changed."""
    known = _known.peek(id(cert))
    if known is not None and known[0] is cert:
        return known[1]
    return cert.dump()


def fingerprint(cert: Any) -> bytes:
    """SHA-256 of the certificate's encoding (how trust stores and chain caches name it)."""
    known = _known.peek(id(cert))
    if known is not None and known[0] is cert:
        if known[2] is None:
            known[2] = hashlib.sha256(known[1]).digest()
        return known[2]
    return hashlib.sha256(cert.dump()).digest()


def intern(cert: Any) -> Any:
    """The first parsed certificate seen with ``cert``'s exact bytes (``cert`` itself the first
    time). Its fields are read once now, so threads sharing it later only read parsed values.
    A certificate with a field that does not parse is never shared: each file keeps its own
    copy, and whoever reads the field reports it exactly as without the cache."""
    encoding = cert.dump()

    def first() -> Any:
        _prime(cert)
        _known.get(id(cert), lambda: [cert, encoding, None])
        return cert

    try:
        return _certificates.get(encoding, first)
    except _ASN1_ERRORS:
        return cert


def _prime(cert: Any) -> None:
    """Parse every field the checks read (raises on the first malformed one)."""
    _ = (
        cert.issuer.dump(),
        cert.subject.dump(),
        cert.serial_number,
        cert.key_identifier,
        cert.public_key.dump(),
        tuple(cert.extended_key_usage_value or ()),
        cert.not_valid_before,
        cert.not_valid_after,
    )


_installed = False


def install() -> None:
    """Answer asn1crypto's ``Name.hashable`` and ``Name.__eq__`` from the name caches,
    process-wide.

    pyhanko looks names up through ``Name.hashable`` (its certificate registry, path building)
    and compares them with ``==`` (issuer to subject, at every step of a path), asking of the
    same names many times; each answer is RFC 4518 string preparation of every attribute, done
    again for every parsed copy of a name. Both are pure functions of the Name's DER, which is
    the key here."""
    global _installed
    if _installed:
        return
    from asn1crypto import x509

    original = x509.Name.hashable.fget
    original_eq = x509.Name.__eq__

    def hashable(self: Any) -> str:
        return _names.get(self.dump(), lambda: original(self))

    def equal(self: Any, other: object) -> bool:
        if not isinstance(other, x509.Name):
            return False
        try:
            return _comparison_key(self) == _comparison_key(other)
        except _ASN1_ERRORS:
            # A name whose strings cannot be prepared: asn1crypto decides (it may answer
            # before reaching the bad attribute, or raise as it always did).
            return bool(original_eq(self, other))

    x509.Name.hashable = property(hashable, doc=x509.Name.hashable.__doc__)
    x509.Name.__eq__ = equal
    _installed = True


def _comparison_key(name: Any) -> tuple[Any, ...]:
    """A value equal for two Names exactly when asn1crypto's RFC 5280 ``==`` says they are:
    per RDN, its number of attributes and its prepared value by attribute type (the same dict
    asn1crypto compares, so a repeated type counts as it does there)."""

    def build() -> tuple[Any, ...]:
        rdns = []
        for rdn in name.chosen:
            values = {ntv["type"].native: ntv.prepped_value for ntv in rdn}
            rdns.append((len(rdn), tuple(sorted(values.items()))))
        return tuple(rdns)

    return _name_keys.get(name.dump(), build)


def name_key(name: Any) -> str:
    """``name.hashable`` (RFC 5280 comparison form) of an asn1crypto Name, cached by its DER."""
    return _names.get(name.dump(), lambda: name.hashable)


def cert_info(cert: Any) -> CertInfo:
    """:func:`certinfo.cert_info` of ``cert``, computed once per distinct certificate."""
    from .certinfo import cert_info as build

    return _infos.get(der(cert), lambda: build(cert))


def public_key(cert: Any) -> Any:
    """The certificate's public key loaded by ``cryptography`` (immutable, thread-safe), once
    per distinct certificate. Raises what ``load_der_public_key`` raises."""
    from cryptography.hazmat.primitives.serialization import load_der_public_key

    return _keys.get(der(cert), lambda: load_der_public_key(cert.public_key.dump()))


def stats() -> dict[str, int]:
    """Hits and misses of each cache (for benchmarks and tests)."""
    out: dict[str, int] = {}
    caches = (
        ("certificates", _certificates),
        ("names", _names),
        ("name_keys", _name_keys),
        ("infos", _infos),
        ("keys", _keys),
    )
    for label, cache in caches:
        out[f"{label}_hits"] = cache.hits
        out[f"{label}_misses"] = cache.misses
        out[f"{label}_size"] = len(cache)
    return out


def clear() -> None:
    for cache in (_certificates, _names, _name_keys, _infos, _keys, _known):
        cache.clear()
