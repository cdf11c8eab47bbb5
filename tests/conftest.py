"""Shared test helpers: where the data is, and trust stores for fixtures and samples."""

from __future__ import annotations

from pathlib import Path

import pytest

try:  # one clear line instead of a collection error per test module
    import codeintegrity  # noqa: F401
except ModuleNotFoundError:
    raise pytest.UsageError(
        "codeintegrity is not installed in this Python; run the README's test command: "
        'python3 -m venv .venv && .venv/bin/pip install -q ".[test]" && .venv/bin/python -m pytest'
    ) from None

DATA = Path(__file__).resolve().parent / "data"
FIXTURES = DATA / "fixtures"
PKI = DATA / "pki"
SAMPLES = DATA / "samples"
SIGNIFY = DATA / "thirdparty" / "signify"
TRUST = DATA / "trust"
# Large real samples stay in the shared corpus beside the checkout (not committed).
SHARED_CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"


@pytest.fixture(scope="session")
def fixture_trust():
    """Anchors of the throwaway test PKI (publisher CA and TSA CA) only."""
    from codeintegrity.authenticode.trust import TrustStore

    return TrustStore.from_paths([str(PKI / "ca.pem"), str(PKI / "tsaca.pem")])


@pytest.fixture(scope="session")
def sample_trust():
    """Microsoft's root program plus the Debian/UEFI anchors the EFI samples chain to."""
    from codeintegrity.authenticode.trust import TrustStore

    return TrustStore.default() | TrustStore.from_paths(
        [str(TRUST / "debian-secure-boot-ca.pem"), str(TRUST / "uefi-ca-2011-2023.pem")]
    )
