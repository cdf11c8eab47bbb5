"""3089 signature information: the values Windows writes for each signature of a file.

VerificationError follows App Control's "event tag explanations"; names come from the
certificate's CN as Windows shows them; hashes in upper-case hex with their sizes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

from ..findings import Finding, FindingCode
from ..report import Check, Report, SignatureResult
from .model import format_system_time
from .schema import SIGNATURE_TYPE_NONE, SIGNING_LEVEL_AUTHENTICODE, SIGNING_LEVEL_UNSIGNED

# Finding code -> 3089 VerificationError, most specific first.
_VERIFICATION_ERROR: dict[FindingCode, int] = {
    FindingCode.IMAGE_HASH_MISMATCH: 1,
    FindingCode.SHARED_WRITABLE_SECTION: 2,
    FindingCode.CHAIN_REVOKED: 4,
    FindingCode.POLICY_CERT_DISALLOWED: 4,
    FindingCode.CHAIN_EXPIRED: 5,
    FindingCode.POLICY_WEAK_DIGEST: 6,
    FindingCode.CHAIN_UNTRUSTED: 7,
    FindingCode.PAGE_HASHES_REQUIRED: 10,
    FindingCode.PAGE_HASH_MISMATCH: 11,
    FindingCode.PAGE_HASH_TABLE_MALFORMED: 11,
    FindingCode.SIGNATURE_INVALID: 23,
    FindingCode.MESSAGE_DIGEST_MISMATCH: 23,
    FindingCode.POLICY_SIGNER_NOT_ALLOWED: 21,
    FindingCode.POLICY_DENIED_HASH: 26,
    FindingCode.POLICY_DENIED_SIGNER: 26,
}
_GENERIC_ERROR = 8
_NOT_SIGNED = 3


def verification_error(findings: Iterable[Finding]) -> int:
    """The 3089 VerificationError for a signature's error findings (0 when there are none)."""
    errors = [f for f in findings if f.event_id is not None]
    if not errors:
        return 0
    codes = [_VERIFICATION_ERROR.get(f.code) for f in errors]
    known = [c for c in codes if c is not None]
    return known[0] if known else _GENERIC_ERROR


_CN = re.compile(r"(?:^|,)\s*(?:CN|commonName)=((?:\\.|[^,\\])*)")


@lru_cache(maxsize=1024)  # the same few signers and issuers recur across many files
def common_name(rfc4514: str | None) -> str:
    """The CN of an RFC 4514 name (Windows shows only the CN in 3089); the whole name if none."""
    if not rfc4514:
        return ""
    match = _CN.search(rfc4514)
    if match is None:
        return rfc4514
    return re.sub(r"\\(.)", r"\1", match.group(1))


def hex_field(value: str | None) -> tuple[str, str]:
    """(size in bytes, upper-case hex) as CI writes hash fields; empty hash -> ("0", "")."""
    if not value:
        return "0", ""
    return str(len(value) // 2), value.upper()


def signature_error(report: Report, sig: SignatureResult) -> int:
    """The 3089 VerificationError of one signature (the generic 8 when invalid for a reason
    without a code of its own)."""
    if sig.valid:
        return 0
    own = [f for f in report.findings if f.signature in (sig.index, None)]
    return verification_error(own) or _GENERIC_ERROR


def signature_info(
    report: Report, sig: SignatureResult, total: int, signature_type: int, error: int
) -> dict[str, str]:
    hash_size, hash_hex = hex_field(report.authentihash.get(sig.digest_algorithm))
    leaf = sig.chain[0] if sig.chain else None
    issuer = sig.chain[1] if len(sig.chain) > 1 else None
    pub_size, pub_tbs = hex_field(leaf.tbs_hash if leaf else None)
    iss_size, iss_tbs = hex_field(issuer.tbs_hash if issuer else None)
    publisher = common_name(sig.signer)
    issuer_name = common_name(sig.issuer)
    return {
        "TotalSignatureCount": str(total),
        "Signature": str(sig.index),
        "CacheState": "0",
        "Hash Size": hash_size,
        "Hash": hash_hex,
        "PageHash": "true" if sig.page_hashes in (Check.VALID, Check.INVALID) else "false",
        "SignatureType": str(signature_type),
        "ValidatedSigningLevel": str(
            SIGNING_LEVEL_AUTHENTICODE if sig.valid else SIGNING_LEVEL_UNSIGNED
        ),
        "VerificationError": str(error),
        "Flags": "0",
        "PolicyBits": "0",
        "NotValidBefore": format_system_time(leaf.not_before) if leaf else "",
        "NotValidAfter": format_system_time(leaf.not_after) if leaf else "",
        "PublisherNameLength": str(len(publisher)),
        "PublisherName": publisher,
        "IssuerNameLength": str(len(issuer_name)),
        "IssuerName": issuer_name,
        "PublisherTBSHashSize": pub_size,
        "PublisherTBSHash": pub_tbs,
        "IssuerTBSHashSize": iss_size,
        "IssuerTBSHash": iss_tbs,
    }


def unsigned_info(report: Report) -> dict[str, str]:
    hash_size, hash_hex = hex_field(report.authentihash.get("sha256"))
    return {
        "TotalSignatureCount": "0",
        "Signature": "0",
        "CacheState": "0",
        "Hash Size": hash_size,
        "Hash": hash_hex,
        "PageHash": "false",
        "SignatureType": str(SIGNATURE_TYPE_NONE),
        "ValidatedSigningLevel": str(SIGNING_LEVEL_UNSIGNED),
        "VerificationError": str(_NOT_SIGNED),
        "Flags": "0",
        "PolicyBits": "0",
        "PublisherNameLength": "0",
        "IssuerNameLength": "0",
        "PublisherTBSHashSize": "0",
        "IssuerTBSHashSize": "0",
    }
