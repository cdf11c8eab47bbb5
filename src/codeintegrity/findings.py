"""Finding codes and the one table that maps each code to its severity and audit event.

A verification never stops at the first problem: every check adds :class:`Finding` values to
the report. The event a finding raises is looked up here and nowhere else.

- 5038: the image hash of a file is not valid (unsigned where required, modified, bad signature)
- 6281: page hashes not valid, missing where required, or the signing certificate revoked
- 6410: the file does not meet the security requirements to load into a process
- 5057: a cryptographic primitive operation failed (it raised instead of answering)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

EVENT_IMAGE_HASH = 5038
EVENT_PAGE_HASH = 6281
EVENT_LOAD_REQUIREMENTS = 6410
EVENT_PRIMITIVE_FAILED = 5057


class Severity(enum.StrEnum):
    ERROR = "error"  # raises its event and makes the file not valid
    WARNING = "warning"  # reported, raises nothing, verdict unchanged
    INFO = "info"


class FindingCode(enum.StrEnum):
    # --- PE layout and the attribute certificate table ---------------------------------
    IMAGE_MALFORMED = "image.malformed"
    CERT_TABLE_MALFORMED = "certtable.malformed"
    CERT_TABLE_NOT_AT_END = "certtable.not-at-end"
    CERT_TABLE_PADDING = "certtable.padding"  # CVE-2013-3900 shape, reported
    CERT_TABLE_PADDING_REJECTED = "certtable.padding-rejected"  # with EnableCertPaddingCheck
    CERT_ENTRY_UNSUPPORTED = "certtable.unsupported-entry"
    CHECKSUM_MISMATCH = "image.checksum-mismatch"  # excluded from every hash: informational
    EFI_HASH_FORM_MISMATCH = "image.efi-hash-form-mismatch"
    # --- signatures (PKCS#7 / Authenticode) ---------------------------------------------
    SIGNATURE_MALFORMED = "signature.malformed"
    NESTED_SIGNATURE_MALFORMED = "signature.nested-malformed"
    INDIRECT_DATA_TYPE = "signature.indirect-data-type"
    DIGEST_ALGORITHM_MISMATCH = "signature.digest-algorithm-mismatch"
    UNSUPPORTED_ALGORITHM = "signature.unsupported-algorithm"
    SIGNER_COUNT = "signature.signer-count"
    CONTENT_TYPE_ATTRIBUTE = "signature.content-type-attribute"
    MESSAGE_DIGEST_MISMATCH = "signature.message-digest-mismatch"
    SIGNATURE_INVALID = "signature.invalid"
    SIGNER_CERT_MISSING = "signature.signer-certificate-missing"
    IMAGE_HASH_MISMATCH = "image-hash.mismatch"
    # --- trust ------------------------------------------------------------------------
    CHAIN_UNTRUSTED = "chain.untrusted"
    CHAIN_EXPIRED = "chain.expired"
    CHAIN_EKU = "chain.eku"
    CHAIN_REVOKED = "chain.revoked"
    REVOCATION_UNKNOWN = "chain.revocation-unknown"
    # chain rules Windows applies beyond RFC 5280 (authenticode/chainrules.py)
    CHAIN_NOT_YET_VALID = "chain.not-yet-valid"
    CHAIN_EKU_NOT_ALLOWED_BY_ISSUER = "chain.eku-not-allowed-by-issuer"
    CHAIN_WEAK_KEY = "chain.weak-key"
    CHAIN_UNSUPPORTED_KEY = "chain.unsupported-key"
    CHAIN_WEAK_SIGNATURE_HASH = "chain.weak-signature-hash"
    CHAIN_ISSUER_NOT_CA = "chain.issuer-not-ca"
    CHAIN_PATH_LENGTH = "chain.path-length-exceeded"
    CHAIN_CRITICAL_EXTENSION = "chain.unknown-critical-extension"
    CHAIN_NAME_CONSTRAINTS = "chain.name-constraints"
    CHAIN_VALIDATOR_FAILED = "chain.validator-failed"  # the path validator raised
    TIMESTAMP_INVALID = "timestamp.invalid"
    TIMESTAMP_UNTRUSTED = "timestamp.untrusted"
    # --- page hashes ------------------------------------------------------------------
    PAGE_HASH_MISMATCH = "page-hash.mismatch"
    PAGE_HASH_TABLE_MALFORMED = "page-hash.table-malformed"
    PAGE_HASHES_REQUIRED = "page-hash.required"
    PAGE_HASHES_ABSENT_INTEGRITY = "page-hash.absent-on-integrity-image"
    # --- load requirements --------------------------------------------------------------
    SHARED_WRITABLE_SECTION = "load.shared-writable-section"
    UNSIGNED_DRIVER = "load.unsigned-driver"
    UNSIGNED_FORCE_INTEGRITY = "load.unsigned-force-integrity"
    # --- the cryptographic primitives themselves ---------------------------------------
    PRIMITIVE_FAILED = "crypto.primitive-failed"
    # --- catalogs (issue: catalogs, policy, revocation) --------------------------------
    CATALOG_SIGNED = "catalog.signed"
    CATALOG_SIGNATURE_INVALID = "catalog.signature-invalid"
    CATALOG_MALFORMED = "catalog.malformed"
    # --- policy ---------------------------------------------------------------------------
    POLICY_DENIED_HASH = "policy.denied-hash"
    POLICY_DENIED_SIGNER = "policy.denied-signer"
    POLICY_SIGNER_NOT_ALLOWED = "policy.signer-not-allowed"
    POLICY_WEAK_DIGEST = "policy.weak-digest"
    POLICY_CERT_DISALLOWED = "policy.certificate-disallowed"


@dataclass(frozen=True, slots=True)
class Rule:
    severity: Severity
    event_id: int | None
    summary: str


_E, _W, _I = Severity.ERROR, Severity.WARNING, Severity.INFO
_C = FindingCode

#: The one table: finding code -> (severity, event it raises, one-line meaning).
RULES: dict[FindingCode, Rule] = {
    _C.IMAGE_MALFORMED: Rule(_E, EVENT_IMAGE_HASH, "PE headers are malformed"),
    _C.CERT_TABLE_MALFORMED: Rule(_E, EVENT_IMAGE_HASH, "certificate table is malformed"),
    _C.CERT_TABLE_NOT_AT_END: Rule(
        _E, EVENT_IMAGE_HASH, "certificate table is not at the end of the file"
    ),
    _C.CERT_TABLE_PADDING: Rule(_W, None, "extra bytes inside the certificate table"),
    _C.CERT_TABLE_PADDING_REJECTED: Rule(
        _E, EVENT_IMAGE_HASH, "extra bytes inside the certificate table (padding check on)"
    ),
    _C.CERT_ENTRY_UNSUPPORTED: Rule(_W, None, "certificate entry of an unsupported kind"),
    _C.CHECKSUM_MISMATCH: Rule(_I, None, "optional-header CheckSum does not match"),
    _C.EFI_HASH_FORM_MISMATCH: Rule(
        _W, None, "EFI image: section-sorted (UEFI) hash differs from the linear hash"
    ),
    _C.SIGNATURE_MALFORMED: Rule(_E, EVENT_IMAGE_HASH, "signature is malformed"),
    _C.NESTED_SIGNATURE_MALFORMED: Rule(_E, EVENT_IMAGE_HASH, "nested signature is malformed"),
    _C.INDIRECT_DATA_TYPE: Rule(_W, None, "indirect data is not SpcPeImageData"),
    _C.DIGEST_ALGORITHM_MISMATCH: Rule(
        _E, EVENT_IMAGE_HASH, "digest algorithms of the signature disagree"
    ),
    _C.UNSUPPORTED_ALGORITHM: Rule(_E, EVENT_IMAGE_HASH, "unsupported algorithm"),
    _C.SIGNER_COUNT: Rule(_E, EVENT_IMAGE_HASH, "signature must have exactly one SignerInfo"),
    _C.CONTENT_TYPE_ATTRIBUTE: Rule(_E, EVENT_IMAGE_HASH, "contentType attribute missing or wrong"),
    _C.MESSAGE_DIGEST_MISMATCH: Rule(
        _E, EVENT_IMAGE_HASH, "messageDigest does not match the signed content"
    ),
    _C.SIGNATURE_INVALID: Rule(_E, EVENT_IMAGE_HASH, "cryptographic signature is not valid"),
    _C.SIGNER_CERT_MISSING: Rule(_E, EVENT_IMAGE_HASH, "signer certificate not in the signature"),
    _C.IMAGE_HASH_MISMATCH: Rule(_E, EVENT_IMAGE_HASH, "image hash does not match the signature"),
    _C.CHAIN_UNTRUSTED: Rule(_E, EVENT_IMAGE_HASH, "signer does not chain to a trusted root"),
    _C.CHAIN_EXPIRED: Rule(_E, EVENT_IMAGE_HASH, "a certificate of the chain is not time-valid"),
    _C.CHAIN_EKU: Rule(_E, EVENT_IMAGE_HASH, "signer certificate lacks the code-signing EKU"),
    _C.CHAIN_REVOKED: Rule(_E, EVENT_PAGE_HASH, "signing certificate is revoked"),
    _C.REVOCATION_UNKNOWN: Rule(_I, None, "revocation status unknown (no CRL for this issuer)"),
    _C.CHAIN_NOT_YET_VALID: Rule(
        _E, EVENT_IMAGE_HASH, "a certificate of the chain is not valid yet"
    ),
    _C.CHAIN_EKU_NOT_ALLOWED_BY_ISSUER: Rule(
        _E, EVENT_IMAGE_HASH, "an issuer's EKU extension does not allow the usage"
    ),
    _C.CHAIN_WEAK_KEY: Rule(_E, EVENT_IMAGE_HASH, "a certificate of the chain has a weak key"),
    _C.CHAIN_UNSUPPORTED_KEY: Rule(
        _E, EVENT_IMAGE_HASH, "a certificate of the chain has an unsupported key or curve"
    ),
    _C.CHAIN_WEAK_SIGNATURE_HASH: Rule(
        _E, EVENT_IMAGE_HASH, "a certificate of the chain is signed with a weak hash"
    ),
    _C.CHAIN_ISSUER_NOT_CA: Rule(
        _E, EVENT_IMAGE_HASH, "an issuer of the chain is not a CA (basicConstraints)"
    ),
    _C.CHAIN_PATH_LENGTH: Rule(
        _E, EVENT_IMAGE_HASH, "a pathLenConstraint of the chain is exceeded"
    ),
    _C.CHAIN_CRITICAL_EXTENSION: Rule(
        _E, EVENT_IMAGE_HASH, "a certificate of the chain has an unknown critical extension"
    ),
    _C.CHAIN_NAME_CONSTRAINTS: Rule(
        _E, EVENT_IMAGE_HASH, "a name of the chain violates an issuer's name constraints"
    ),
    _C.CHAIN_VALIDATOR_FAILED: Rule(
        _E, EVENT_PRIMITIVE_FAILED, "certificate path validation failed internally"
    ),
    _C.TIMESTAMP_INVALID: Rule(_W, None, "timestamp is not valid and was ignored"),
    _C.TIMESTAMP_UNTRUSTED: Rule(_W, None, "timestamp authority is not trusted; ignored"),
    _C.PAGE_HASH_MISMATCH: Rule(_E, EVENT_PAGE_HASH, "page hash does not match"),
    _C.PAGE_HASH_TABLE_MALFORMED: Rule(_E, EVENT_PAGE_HASH, "page hash table is malformed"),
    _C.PAGE_HASHES_REQUIRED: Rule(_E, EVENT_PAGE_HASH, "signed without page hashes"),
    _C.PAGE_HASHES_ABSENT_INTEGRITY: Rule(
        _W, None, "driver or FORCE_INTEGRITY image signed without page hashes"
    ),
    _C.SHARED_WRITABLE_SECTION: Rule(
        _E, EVENT_LOAD_REQUIREMENTS, "section is both shared and writable"
    ),
    _C.UNSIGNED_DRIVER: Rule(_E, EVENT_IMAGE_HASH, "kernel-mode driver is not validly signed"),
    _C.UNSIGNED_FORCE_INTEGRITY: Rule(
        _E, EVENT_IMAGE_HASH, "FORCE_INTEGRITY image is not validly signed"
    ),
    _C.PRIMITIVE_FAILED: Rule(
        _E, EVENT_PRIMITIVE_FAILED, "a cryptographic primitive failed; nothing could be proved"
    ),
    _C.CATALOG_SIGNED: Rule(_I, None, "file is signed through a catalog"),
    _C.CATALOG_SIGNATURE_INVALID: Rule(
        _E, EVENT_IMAGE_HASH, "the matching catalog's signature is not valid"
    ),
    _C.CATALOG_MALFORMED: Rule(_W, None, "a catalog file could not be parsed"),
    _C.POLICY_DENIED_HASH: Rule(_E, EVENT_IMAGE_HASH, "file hash is denied by policy"),
    _C.POLICY_DENIED_SIGNER: Rule(_E, EVENT_IMAGE_HASH, "signer is denied by policy"),
    _C.POLICY_SIGNER_NOT_ALLOWED: Rule(
        _E, EVENT_IMAGE_HASH, "signer is not in the policy's allowed signers"
    ),
    _C.POLICY_WEAK_DIGEST: Rule(
        _E, EVENT_IMAGE_HASH, "digest algorithm is weaker than the policy minimum"
    ),
    _C.POLICY_CERT_DISALLOWED: Rule(_E, EVENT_PAGE_HASH, "certificate is disallowed by policy"),
}


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem (or fact) found while judging a file."""

    code: FindingCode
    detail: str
    signature: int | None = None  # index of the signature (0 = primary, nested follow)
    offset: int | None = None  # file offset the finding is about
    page: int | None = None  # page-hash table entry index
    section: str | None = None  # section name

    @property
    def rule(self) -> Rule:
        return RULES[self.code]

    @property
    def severity(self) -> Severity:
        return RULES[self.code].severity

    @property
    def event_id(self) -> int | None:
        return RULES[self.code].event_id

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "code": str(self.code),
            "severity": str(self.severity),
            "event_id": self.event_id,
            "detail": self.detail,
        }
        for key in ("signature", "offset", "page", "section"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out

    @classmethod
    def from_dict(cls, d: object) -> Finding:
        """Rebuild a finding from :meth:`to_dict` output (severity and event come from RULES)."""
        from .errors import MalformedError

        if not isinstance(d, dict):
            raise MalformedError(None, "finding", f"expected an object, got {type(d).__name__}")
        try:
            code = FindingCode(str(d.get("code")))
        except ValueError:
            raise MalformedError(None, "code", f"unknown finding code {d.get('code')!r}") from None
        detail = d.get("detail")
        if not isinstance(detail, str):
            raise MalformedError(None, "detail", "expected a string")
        numbers: dict[str, int | None] = {}
        for key in ("signature", "offset", "page"):
            value = d.get(key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise MalformedError(None, key, "expected an integer")
            numbers[key] = value
        section = d.get("section")
        if section is not None and not isinstance(section, str):
            raise MalformedError(None, "section", "expected a string")
        return cls(code, detail, section=section, **numbers)


def missing_rules() -> list[FindingCode]:
    """Codes without a table entry (a test keeps this empty)."""
    return [code for code in FindingCode if code not in RULES]
