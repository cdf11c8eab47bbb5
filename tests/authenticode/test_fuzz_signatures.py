"""Mutated and truncated real signatures: typed errors or verdicts, never a crash."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codeintegrity.authenticode.signeddata import parse_signatures
from codeintegrity.authenticode.signer import verify_signer
from codeintegrity.authenticode.trust import TrustStore
from codeintegrity.errors import CIError

from .conftest import FIXTURES, PKI, cert_entries

# A timestamped signature and a nested one: most structures a parser walks.
SEEDS = [
    cert_entries((FIXTURES / name).read_bytes())[0]
    for name in ("t64_sha256_ph_ts.exe", "t64_nested_sha1+sha256ph.exe")
]
STORE = TrustStore.from_paths([PKI / "ca.pem", PKI / "tsaca.pem"])
AT = datetime(2026, 6, 1, tzinfo=UTC)


@st.composite
def mutants(draw) -> bytes:
    data = bytearray(SEEDS[draw(st.integers(0, len(SEEDS) - 1))])
    for _ in range(draw(st.integers(1, 8))):
        pos = draw(st.integers(0, len(data) - 1))
        data[pos] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


def _check(der: bytes) -> None:
    try:
        sigs = parse_signatures(der, 0)
    except CIError as exc:
        assert "\n" not in str(exc)
        return
    for sig in sigs:
        verdict = verify_signer(sig, STORE, at=AT)
        assert isinstance(verdict.signature_valid, bool)
        assert all(f.signature == sig.index for f in verdict.findings)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutants())
def test_mutated_signature_never_crashes(der):
    _check(der)


def test_every_truncation_prefix_is_typed():
    seed = SEEDS[0]
    for length in range(0, len(seed), 97):
        _check(seed[:length])
