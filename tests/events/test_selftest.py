from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from codeintegrity.errors import SelfTestError
from codeintegrity.events import selftest as selftest_module
from codeintegrity.events import selftest_vectors as kat
from codeintegrity.events.selftest import (
    TESTS,
    _flip,
    ensure_selftest,
    run_selftest,
    selftest_event,
)

from .reports import HOST


def test_every_primitive_passes_its_known_answer_test():
    result = run_selftest()
    assert result.ok and result.return_code == 0
    names = [line.split(":")[0] for line in result.details]
    assert names == [name for name, _ in TESTS]
    for expected in ("MD5", "SHA-1", "SHA-256", "SHA-384", "SHA-512", "ECDSA P-256 SHA-256"):
        assert expected in names
    assert "cryptography" in result.module


def test_selftest_is_fast_once_imported():
    run_selftest()
    assert min(run_selftest().seconds for _ in range(3)) < 0.05


def test_a_failing_or_raising_primitive_sets_its_bit():
    def wrong() -> str | None:
        return "digest 00 != known answer"

    def boom() -> str | None:
        raise RuntimeError("backend gone")

    tests = (TESTS[0], ("broken", wrong), TESTS[2], ("raises", boom))
    result = run_selftest(tests)
    assert not result.ok
    assert result.return_code == 0b1010
    assert "broken: FAILED (digest 00 != known answer)" in result.details
    assert "raises: FAILED (RuntimeError: backend gone)" in result.details


def test_wrong_good_signature_is_reported():
    problem = selftest_module._signature_check(
        kat.RSA2048_SPKI, _flip(kat.RSA2048_SHA256_SIG), "sha256", False
    )
    assert problem == "known-good signature rejected"


def test_negative_check_catches_a_verifier_that_accepts_anything(monkeypatch):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    class AcceptsAll(rsa.RSAPublicKey):
        def verify(self, *args: object, **kwargs: object) -> None:
            return None

    AcceptsAll.__abstractmethods__ = frozenset()
    monkeypatch.setattr(serialization, "load_der_public_key", lambda data: AcceptsAll())
    problem = selftest_module._signature_check(
        kat.RSA2048_SPKI, kat.RSA2048_SHA256_SIG, "sha256", False
    )
    assert problem == "signature with a flipped bit accepted"
    result = run_selftest()
    assert not result.ok
    # RSA: flipped signature accepted; ECDSA: the loader now returns an RSA key. Hashes pass.
    assert result.return_code == 0b111100000


def test_ensure_selftest_refuses_to_run_after_a_failure(monkeypatch):
    monkeypatch.setattr(selftest_module, "_result", None)
    monkeypatch.setattr(selftest_module, "TESTS", (("always-bad", lambda: "no"),))
    monkeypatch.setattr(
        selftest_module, "run_selftest", lambda: run_selftest((("always-bad", lambda: "no"),))
    )
    with pytest.raises(SelfTestError, match=r"return code 0x1\): always-bad: FAILED \(no\)"):
        ensure_selftest()
    with pytest.raises(SelfTestError):  # cached: still refused, not re-run
        ensure_selftest()
    monkeypatch.setattr(selftest_module, "_result", None)
    monkeypatch.undo()
    assert ensure_selftest().ok


def test_selftest_event_5056():
    result = run_selftest()
    event = selftest_event(result, host=HOST)
    assert event.event_id == 5056
    assert event.value("ReturnCode") == "0x0"
    assert event.value("Module") == result.module
    assert event.outcome == "success"
    failed = run_selftest(((TESTS[0][0], lambda: "bad"),))
    assert selftest_event(failed, host=HOST).value("ReturnCode") == "0x1"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI not installed")
@pytest.mark.parametrize(
    ("spki", "signature", "digest"),
    [
        (kat.RSA2048_SPKI, kat.RSA2048_SHA256_SIG, "sha256"),
        (kat.RSA2048_SPKI, kat.RSA2048_SHA1_SIG, "sha1"),
        (kat.P256_SPKI, kat.P256_SHA256_SIG, "sha256"),
        (kat.P384_SPKI, kat.P384_SHA384_SIG, "sha384"),
    ],
)
def test_embedded_vectors_verify_with_the_openssl_cli(tmp_path: Path, spki, signature, digest):
    """An independent implementation agrees with the constants (and rejects a flipped one)."""
    (tmp_path / "key.der").write_bytes(spki)
    (tmp_path / "msg").write_bytes(kat.MESSAGE)

    def verify(sig: bytes) -> subprocess.CompletedProcess[str]:
        (tmp_path / "sig").write_bytes(sig)
        return subprocess.run(
            ["openssl", "dgst", f"-{digest}", "-keyform", "DER", "-verify",
             str(tmp_path / "key.der"), "-signature", str(tmp_path / "sig"), str(tmp_path / "msg")],
            capture_output=True, text=True, check=False,
        )  # fmt: skip

    good = verify(signature)
    assert good.returncode == 0 and "Verified OK" in good.stdout
    assert verify(_flip(signature)).returncode != 0
