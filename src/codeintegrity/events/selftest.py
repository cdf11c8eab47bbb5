"""Cryptographic self-tests (event 5056) and primitive failures (event 5057).

Every hash and signature primitive the engine uses is run on fixed inputs and compared with
known answers: MD5, SHA-1, SHA-256, SHA-384 and SHA-512 through hashlib; RSA PKCS#1 v1.5
(SHA-256, SHA-1) and ECDSA P-256 / P-384 verification through cryptography, each with a negative
check (a signature with one bit flipped must fail). The CLI runs :func:`run_selftest` before the
first verification of its process and on ``codeintegrity selftest``, and records a 5056; library
callers use :func:`ensure_selftest`, which runs it once per process and raises on failure.
``ReturnCode`` is 0 on success, otherwise a bit set per failed test (bit order = ``TESTS``).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import SelfTestError
from . import selftest_vectors as kat

if TYPE_CHECKING:  # the event modules load only when an event is built (CLI start-up cost)
    from .build import Host
    from .model import Event


@dataclass(frozen=True)
class SelfTestResult:
    ok: bool
    return_code: int
    module: str
    details: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _flip(signature: bytes) -> bytes:
    return signature[:-1] + bytes([signature[-1] ^ 0x01])


def _signature_check(spki: bytes, signature: bytes, algorithm: str, ecdsa: bool) -> str | None:
    """None when the good signature verifies and the flipped one does not; else the reason."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

    # Instances, not classes: a dict of the classes is typed as the abstract base class.
    digests: dict[str, hashes.HashAlgorithm] = {
        "sha1": hashes.SHA1(),  # noqa: S303 - the known-answer test of a primitive in use
        "sha256": hashes.SHA256(),
        "sha384": hashes.SHA384(),
    }
    digest = digests[algorithm]
    key = serialization.load_der_public_key(spki)

    def verify(sig: bytes) -> None:
        if ecdsa:
            assert isinstance(key, ec.EllipticCurvePublicKey)
            key.verify(sig, kat.MESSAGE, ec.ECDSA(digest))
        else:
            assert isinstance(key, rsa.RSAPublicKey)
            key.verify(sig, kat.MESSAGE, padding.PKCS1v15(), digest)

    try:
        verify(signature)
    except InvalidSignature:
        return "known-good signature rejected"
    try:
        verify(_flip(signature))
    except InvalidSignature:
        return None
    return "signature with a flipped bit accepted"


def _hash_check(name: str) -> Callable[[], str | None]:
    def check() -> str | None:
        got = hashlib.new(name, kat.HASH_INPUT).hexdigest()
        return None if got == kat.HASH_VECTORS[name] else f"digest {got} != known answer"

    return check


def _sig(spki: bytes, sig: bytes, alg: str, ecdsa: bool) -> Callable[[], str | None]:
    return lambda: _signature_check(spki, sig, alg, ecdsa)


#: (name, check) in ReturnCode bit order.
TESTS: tuple[tuple[str, Callable[[], str | None]], ...] = (
    ("MD5", _hash_check("md5")),
    ("SHA-1", _hash_check("sha1")),
    ("SHA-256", _hash_check("sha256")),
    ("SHA-384", _hash_check("sha384")),
    ("SHA-512", _hash_check("sha512")),
    ("RSA-2048 PKCS#1 v1.5 SHA-256", _sig(kat.RSA2048_SPKI, kat.RSA2048_SHA256_SIG, "sha256", False)),  # noqa: E501
    ("RSA-2048 PKCS#1 v1.5 SHA-1", _sig(kat.RSA2048_SPKI, kat.RSA2048_SHA1_SIG, "sha1", False)),
    ("ECDSA P-256 SHA-256", _sig(kat.P256_SPKI, kat.P256_SHA256_SIG, "sha256", True)),
    ("ECDSA P-384 SHA-384", _sig(kat.P384_SPKI, kat.P384_SHA384_SIG, "sha384", True)),
)  # fmt: skip


def _module_name() -> str:
    from .. import __version__

    try:
        import cryptography
        from cryptography.hazmat.backends.openssl import backend

        crypto = f"cryptography {cryptography.__version__}, {backend.openssl_version_text()}"
    except Exception:  # reported as a failed test below, not here
        crypto = "cryptography unavailable"
    return f"codeintegrity {__version__} (hashlib; {crypto})"


def run_selftest(
    tests: tuple[tuple[str, Callable[[], str | None]], ...] = TESTS,
) -> SelfTestResult:
    """Run every known-answer test; never raises (a crash is a failed test)."""
    started = time.perf_counter()
    code = 0
    details: list[str] = []
    for bit, (name, check) in enumerate(tests):
        try:
            problem = check()
        except Exception as exc:  # a primitive that raises has failed its test
            problem = f"{type(exc).__name__}: {exc}"
        if problem is None:
            details.append(f"{name}: ok")
        else:
            code |= 1 << bit
            details.append(f"{name}: FAILED ({problem})")
    return SelfTestResult(
        ok=code == 0,
        return_code=code,
        module=_module_name(),
        details=details,
        seconds=time.perf_counter() - started,
    )


def selftest_event(result: SelfTestResult, *, host: Host | None = None) -> Event:
    """The 5056 event of a self-test run."""
    from datetime import UTC, datetime

    from .build import Host, host_event
    from .schema import EVENT_SELFTEST

    host = host or Host.current()
    values = {
        **host.subject(),
        "Module": result.module,
        "ReturnCode": f"{result.return_code:#x}",
    }
    return host_event(host, EVENT_SELFTEST, values, when=datetime.now(UTC))


_lock = threading.Lock()
_result: SelfTestResult | None = None


def ensure_selftest() -> SelfTestResult:
    """Run the self-test once per process; raise SelfTestError when it failed."""
    global _result
    with _lock:
        if _result is None:
            _result = run_selftest()
        result = _result
    if not result.ok:
        failed = [d for d in result.details if "FAILED" in d]
        raise SelfTestError(
            f"cryptographic self-test failed (return code {result.return_code:#x}): "
            + "; ".join(failed)
        )
    return result
