"""Revocation with the per-process caches warm: CRL signatures are checked once per CRL and
issuer, while each file's timestamp is still judged against the revocation date."""

from __future__ import annotations

from datetime import UTC, datetime

from codeintegrity import revocation
from codeintegrity.findings import FindingCode
from codeintegrity.revocation import RevocationSources, check_chain

from .test_revocation import AFTER_TS, CHAIN, TIMESTAMP, codes, forged_ca, make_crl, pytestmark

__all__ = ["forged_ca", "make_crl", "pytestmark"]  # fixtures and the openssl skip, shared


def test_each_file_is_judged_at_its_own_timestamp(make_crl):
    sources = RevocationSources.load([make_crl({"leaf.pem": AFTER_TS})])
    later = datetime(2026, 7, 1, tzinfo=UTC)  # after the revocation date
    before = revocation._CRL_SIGNATURES.hits
    for _ in range(2):
        early = check_chain(
            sources, CHAIN, timestamp=TIMESTAMP, lifetime_signing=False, signature=0
        )
        late = check_chain(sources, CHAIN, timestamp=later, lifetime_signing=False, signature=0)
        assert codes(early) == []
        assert codes(late) == [FindingCode.CHAIN_REVOKED]
    assert revocation._CRL_SIGNATURES.hits >= before + 3  # one check, then cache hits


def test_forged_crl_stays_rejected_beside_a_genuine_one(make_crl, forged_ca):
    genuine = make_crl({"leaf.pem": AFTER_TS})
    forged = make_crl({"leaf2.pem": AFTER_TS}, signer=forged_ca)
    sources = RevocationSources.load([genuine, forged])
    results = [
        check_chain(sources, CHAIN, timestamp=None, lifetime_signing=False, signature=0)
        for _ in range(3)
    ]
    assert results[0] == results[1] == results[2]
    assert sorted(codes(results[0])) == sorted(
        [FindingCode.REVOCATION_UNKNOWN, FindingCode.CHAIN_REVOKED]
    )
    assert "does not verify" in next(
        f.detail for f in results[0] if f.code is FindingCode.REVOCATION_UNKNOWN
    )
