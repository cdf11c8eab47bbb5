"""Verify the signer of a signature: attributes, cryptographic signature, timestamp, chain.

The image digest itself is compared by the engine; this module judges whether the SignerInfo
really signed the SpcIndirectDataContent (or a catalog's CTL) and whether its signer is trusted
at the right moment (the valid timestamp time, else ``at``, else now).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..findings import Finding, FindingCode
from ..report import CertInfo
from . import oids
from .certcache import cert_info
from .signeddata import ASN1_ERRORS, Signature
from .signerinfo import check_signed_data
from .timestamp import verify_timestamps
from .trust import TrustStore, validate_chain

# Problems that mean "the signer did not sign this content" (as opposed to "not trusted").
_SIGNATURE_CODES = frozenset(
    {
        FindingCode.SIGNER_COUNT,
        FindingCode.SIGNER_CERT_MISSING,
        FindingCode.CONTENT_TYPE_ATTRIBUTE,
        FindingCode.MESSAGE_DIGEST_MISMATCH,
        FindingCode.SIGNATURE_INVALID,
        FindingCode.UNSUPPORTED_ALGORITHM,
    }
)


@dataclass(frozen=True, slots=True)
class SignerVerdict:
    """What the signer checks found for one signature."""

    signature_valid: bool  # contentType, messageDigest and the cryptographic signature
    trusted: bool  # chains to an anchor with the EKU at the judged moment
    signer: CertInfo | None
    chain: tuple[CertInfo, ...]  # leaf first, anchor last
    chain_certs: tuple[Any, ...]  # asn1crypto certificates, leaf first (for revocation)
    timestamp: datetime | None  # a valid, trusted timestamp only
    timestamp_kind: str | None  # "rfc3161" | "pkcs9"
    lifetime_signing: bool
    findings: tuple[Finding, ...]

    @classmethod
    def failed(cls, finding: Finding) -> SignerVerdict:
        """A verdict for a signature that could not be checked at all, with the reason."""
        return cls(False, False, None, (), (), None, None, False, (finding,))


def verify_signer(
    sig: Signature, trust: TrustStore, *, at: datetime | None = None
) -> SignerVerdict:
    """Verify one Authenticode signature's signer (see the module docstring)."""
    return verify_signed_data(
        sig.signed_data,
        index=sig.index,
        trust=trust,
        at=at,
        expected_content_type=oids.SPC_INDIRECT_DATA,
    )


def verify_signed_data(
    signed_data: Any,
    *,
    index: int,
    trust: TrustStore,
    at: datetime | None,
    expected_content_type: str,
    eku: str = oids.EKU_CODE_SIGNING,
) -> SignerVerdict:
    """The signer, attribute, signature, timestamp and chain checks for any SignedData."""
    try:
        return _verify(signed_data, index, trust, at, expected_content_type, eku)
    except ASN1_ERRORS as exc:  # a lazily parsed field failed late: a verdict, not a crash
        detail = f"signature cannot be checked: {' '.join(str(exc).split())[:160]}"
        finding = Finding(FindingCode.SIGNATURE_INVALID, detail, signature=index)
        return SignerVerdict(False, False, None, (), (), None, None, False, (finding,))


def _verify(
    signed_data: Any,
    index: int,
    trust: TrustStore,
    at: datetime | None,
    expected_content_type: str,
    eku: str,
) -> SignerVerdict:
    findings: list[Finding] = []

    def add(code: FindingCode, detail: str) -> None:
        findings.append(Finding(code, detail, signature=index))

    check = check_signed_data(signed_data, expected_content_type)
    for code, detail in check.problems:
        add(code, detail)
    signature_valid = not any(f.code in _SIGNATURE_CODES for f in findings)
    leaf = check.signer_cert
    if leaf is None or check.signer_info is None:
        return SignerVerdict(
            signature_valid, False, None, (), (), None, None, False, tuple(findings)
        )
    stamp = verify_timestamps(check.signer_info, check.certificates, trust)
    for code, detail in stamp.problems:
        add(code, detail)
    lifetime = _has_eku(leaf, oids.EKU_LIFETIME_SIGNING)
    judged = _aware(at) if at is not None else datetime.now(UTC)
    # A valid timestamp freezes the chain at signing time, unless lifetime signing forbids it.
    moment = stamp.time if stamp.time is not None and not lifetime else judged
    chain = validate_chain(leaf, check.certificates, trust, moment, eku, timestamped=stamp.time)
    when = "timestamp" if moment is stamp.time else "judged"
    for code, detail in chain.problems:
        # One finding per broken rule, each naming the certificate that breaks it.
        add(code, f"{detail} ({when} time {moment.isoformat()})")
    infos = tuple(_safe_info(c) for c in chain.certs)
    return SignerVerdict(
        signature_valid=signature_valid,
        trusted=chain.ok,
        signer=_safe_info(leaf),
        chain=tuple(i for i in infos if i is not None),
        chain_certs=chain.certs,
        timestamp=stamp.time,
        timestamp_kind=stamp.kind,
        lifetime_signing=lifetime,
        findings=tuple(findings),
    )


def _has_eku(cert: Any, eku: str) -> bool:
    try:
        usages = cert.extended_key_usage_value
    except ASN1_ERRORS:
        return False
    return usages is not None and any(u.dotted == eku for u in usages)


def _safe_info(cert: Any) -> CertInfo | None:
    try:
        return cert_info(cert)
    except ASN1_ERRORS:
        return None


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
