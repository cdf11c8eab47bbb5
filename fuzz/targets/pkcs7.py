"""PKCS#7 / Authenticode signature parsing (``parse_signatures``, nested signatures included)
and the signer checks (``verify_signer``: attributes, signature, timestamps, chain).

The input is the DER of one WIN_CERTIFICATE's bCertificate. Invariants: parsing raises only
``MalformedSignature`` (one line); signatures are numbered 0..n-1 depth-first, each parent
precedes its children, depth and count stay within the limits; a page-hash table always comes
with its algorithm; the signer checks never raise, and a verdict that is not valid or not
trusted always says why (an error finding on that signature).
"""

from __future__ import annotations

from datetime import datetime

from codeintegrity.authenticode.signeddata import parse_signatures
from codeintegrity.authenticode.signer import verify_signer
from codeintegrity.errors import MalformedSignature
from codeintegrity.findings import Severity
from codeintegrity.limits import Limits

from ..common import JUDGED_AT, fixture_trust, one_line, require

INPUT = "the DER PKCS#7 SignedData of a WIN_CERTIFICATE entry"
LIMITS = Limits()
AT = datetime.fromisoformat(JUDGED_AT)


def check(data: bytes) -> None:
    try:
        signatures = parse_signatures(data, 0, LIMITS, first_index=0)
    except MalformedSignature as exc:
        one_line(exc.diagnostics(), "parse_signatures")
        return
    require(signatures, "parsed without a single signature")
    require(len(signatures) <= LIMITS.max_signatures, "more signatures than the limit")
    trust = fixture_trust()
    for number, sig in enumerate(signatures):
        require(sig.index == number, f"signature {number} numbered {sig.index}")
        require((sig.parent is None) == (number == 0), "only the primary has no parent")
        require(sig.parent is None or sig.parent < number, "a child precedes its parent")
        require(0 <= sig.depth <= LIMITS.max_nesting_depth, f"depth {sig.depth}")
        require(
            (sig.page_hash_raw is None) == (sig.page_hash_algorithm is None),
            "page-hash table and algorithm disagree",
        )
        for finding in sig.findings:
            one_line(finding.detail, f"finding {finding.code}")
        verdict = verify_signer(sig, trust, at=AT)
        mine = [f for f in verdict.findings if f.signature == sig.index]
        require(len(mine) == len(verdict.findings), "a verdict finding names another signature")
        for finding in verdict.findings:
            one_line(finding.detail, f"finding {finding.code}")
        complaint = any(f.severity is Severity.ERROR for f in verdict.findings)
        if not verdict.signature_valid or not verdict.trusted:
            require(complaint, "signature not valid or not trusted, and no error says why")
        if verdict.trusted:
            require(verdict.signer is not None and verdict.chain, "trusted without a chain")
