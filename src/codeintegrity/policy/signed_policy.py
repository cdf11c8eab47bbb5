"""The PKCS#7 signature of a signed Code Integrity policy (``SiPolicy.p7b``, signed ``.cip``).

Windows loads a signed policy only when its signature verifies and its signer is one of the
policy's own ``UpdatePolicySigners`` (Microsoft: "Use signed policies to protect App Control
for Business against tampering"). Offline we can check:

1. the signature itself, by the same SignerInfo machinery as Authenticode and catalogs
   (:func:`codeintegrity.authenticode.signer.verify_signed_data`: eContentType
   1.3.6.1.4.1.311.79.1, messageDigest over the encapsulated policy, the RSA/ECDSA signature);
   a policy whose bytes were changed after signing fails here;
2. whether the signer chains to a trust anchor we were given (the real ones chain to
   Microsoft's or an enterprise's root; without that anchor it is "untrusted", not "invalid");
3. whether a certificate of the signer's chain matches an ``UpdatePolicySigners`` signer rule
   (CertRoot TBS hash, narrowed by CertPublisher). Well-known roots are not resolved offline.

Not checked: the firmware side (a policy on the EFI partition is also checked by the boot
manager against Secure Boot) and the anti-rollback of policy versions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..errors import CIError, one_line
from .sipolicy_bin import OID_CI_POLICY, parse_binary_policy

if TYPE_CHECKING:
    from ..authenticode.signer import SignerVerdict
    from ..authenticode.trust import TrustStore

UNSIGNED, VALID, INVALID = "unsigned", "valid", "invalid"


@dataclass(frozen=True)
class PolicySignature:
    status: str  # "unsigned", "valid" (content and signature verify) or "invalid"
    trusted: bool = False  # the signer chains to one of the given anchors
    signer: str | None = None  # the signer certificate's subject
    # The signer matches one of the policy's UpdatePolicySigners; None: the policy names none,
    # or only well-known roots (not resolved offline), or the signature is not valid.
    update_signer: bool | None = None
    problems: tuple[str, ...] = ()  # why it is invalid or untrusted, one line each

    @property
    def refused(self) -> bool:
        """Windows does not load a signed policy whose signature does not verify."""
        return self.status == INVALID

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "trusted": self.trusted,
            "signer": self.signer,
            "update_signer": self.update_signer,
            "problems": list(self.problems),
        }


def check_policy_signature(
    data: bytes, trust: TrustStore, at: datetime | None = None
) -> PolicySignature:
    """Verify a policy file's PKCS#7 signature (see the module docstring). Bare policies are
    ``unsigned``; malformed PKCS#7 is ``invalid`` with the reason. Never raises on bad input."""
    if data[:1] != b"\x30":
        return PolicySignature(UNSIGNED)
    from asn1crypto import cms

    from ..authenticode.signeddata import ASN1_ERRORS
    from ..authenticode.signer import verify_signed_data

    try:
        info = cms.ContentInfo.load(data)
        signed_data = info["content"]
        certificates = tuple(
            c.chosen for c in signed_data["certificates"] if c.name == "certificate"
        )
    except ASN1_ERRORS as exc:
        return PolicySignature(INVALID, problems=(f"PKCS#7 does not parse: {one_line(exc, 160)}",))
    verdict = verify_signed_data(
        signed_data, index=0, trust=trust, at=at, expected_content_type=OID_CI_POLICY
    )
    signer = verdict.signer.subject if verdict.signer is not None else None
    problems = tuple(dict.fromkeys(f.detail for f in verdict.findings if f.detail))
    if not verdict.signature_valid:
        return PolicySignature(INVALID, False, signer, None, problems)
    return PolicySignature(
        VALID,
        verdict.trusted,
        signer,
        _is_update_signer(data, verdict, certificates),
        () if verdict.trusted else problems,
    )


def _is_update_signer(
    data: bytes, verdict: SignerVerdict, certificates: tuple[Any, ...]
) -> bool | None:
    from ..authenticode.certinfo import tbs_hash
    from .evaluate import common_names

    try:
        parsed = parse_binary_policy(data)  # (it unwraps the PKCS#7 itself)
    except CIError:
        return None  # the policy itself does not parse: its import says why
    rules = [parsed.signers[i] for i in parsed.update_signers if i < len(parsed.signers)]
    if not rules:
        return None
    tbs = {info.tbs_hash.lower() for info in verdict.chain}
    for cert in certificates:
        try:
            tbs.add(tbs_hash(cert))
        except (ValueError, TypeError):  # a certificate that does not encode: not a match
            continue
    publishers = common_names(verdict.signer) if verdict.signer is not None else []
    for rule in rules:
        if rule.root_tbs is None:
            continue
        if rule.root_tbs.hex() in tbs and (rule.publisher is None or rule.publisher in publishers):
            return True
    return None if any(rule.root_tbs is None for rule in rules) else False
