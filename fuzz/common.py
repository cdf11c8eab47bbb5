"""What every harness shares: the invariant error and the checks common to all parsers."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from codeintegrity.authenticode.trust import TrustStore

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"


class InvariantViolation(AssertionError):
    """A harness invariant does not hold: a real defect, not a rejected input."""


def require(condition: object, message: str) -> None:
    """Like ``assert``, but survives ``python -O`` and says which invariant failed."""
    if not condition:
        raise InvariantViolation(message)


def one_line(message: str, what: str) -> None:
    """Errors reach users as one line on stderr (the project's error standard)."""
    require(message and "\n" not in message, f"{what}: error is not one line: {message!r}")


# The throwaway test PKI's certificates are valid 2025-2045: judge at a fixed moment inside it,
# so a verdict never depends on the day the fuzzer runs.
JUDGED_AT = "2026-01-01T00:00:00+00:00"


def fixture_trust() -> TrustStore:
    """The test PKI's anchors (publisher CA and TSA CA), built once per process."""
    global _TRUST
    if _TRUST is None:
        from codeintegrity.authenticode.trust import TrustStore

        pki = DATA / "pki"
        _TRUST = TrustStore.from_paths([str(pki / "ca.pem"), str(pki / "tsaca.pem")])
    return _TRUST


_TRUST: TrustStore | None = None
