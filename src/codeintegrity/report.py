"""The verification report: a value describing everything found about one file."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from .findings import Finding, Severity


class Status(enum.StrEnum):
    VALID = "valid"
    INVALID = "invalid"
    UNSIGNED = "unsigned"
    MALFORMED = "malformed"


class Check(enum.StrEnum):
    """Outcome of one check on one signature."""

    VALID = "valid"
    INVALID = "invalid"
    ABSENT = "absent"  # page hashes only: the signature carries none
    NOT_CHECKED = "not-checked"  # could not be checked (e.g. unparseable signature)


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """What the engine learnt about the PE image itself."""

    machine: int
    pe32_plus: bool
    subsystem: int
    characteristics: int
    dll_characteristics: int
    is_kernel_driver: bool
    is_efi: bool
    force_integrity: bool
    sections: int
    size: int


@dataclass(frozen=True, slots=True)
class CertInfo:
    """A certificate as reports show it; TBS hashes identify it in WDAC policies."""

    subject: str
    issuer: str
    serial: str  # hex
    sha1: str  # thumbprint, hex
    tbs_hash: str  # hex, with the hash of the certificate's own signature algorithm
    not_before: datetime
    not_after: datetime
    ekus: tuple[str, ...] = ()  # dotted OIDs of the extended key usage extension, if any

    def to_dict(self) -> dict[str, object]:
        return {
            "ekus": list(self.ekus),
            "subject": self.subject,
            "issuer": self.issuer,
            "serial": self.serial,
            "sha1": self.sha1,
            "tbs_hash": self.tbs_hash,
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class SignatureResult:
    """The verdict on one Authenticode signature (primary or nested)."""

    index: int  # 0 = first signature of the first entry; nested ones follow depth-first
    parent: int | None  # index of the signature this one is nested in
    entry: int  # WIN_CERTIFICATE entry it came from
    digest_algorithm: str  # hashlib name: md5, sha1, sha256, sha384, sha512
    image_hash: Check
    page_hashes: Check
    page_hash_algorithm: str | None
    signature_valid: bool  # messageDigest and the cryptographic signature
    trusted: bool  # chains to an anchor with the right EKU at the judged time
    signer: str | None  # subject of the signing certificate (RFC 4514)
    issuer: str | None
    timestamp: datetime | None  # a valid timestamp only
    timestamp_kind: str | None  # "rfc3161" | "pkcs9"
    chain: tuple[CertInfo, ...] = ()  # leaf first, anchor last
    signed_digest: bytes = b""
    valid: bool = False  # every check of this signature passed

    def to_dict(self) -> dict[str, object]:
        return {
            "index": self.index,
            "parent": self.parent,
            "entry": self.entry,
            "digest_algorithm": self.digest_algorithm,
            "image_hash": str(self.image_hash),
            "page_hashes": str(self.page_hashes),
            "page_hash_algorithm": self.page_hash_algorithm,
            "signature_valid": self.signature_valid,
            "trusted": self.trusted,
            "valid": self.valid,
            "signer": self.signer,
            "issuer": self.issuer,
            "timestamp": self.timestamp.isoformat() if self.timestamp else None,
            "timestamp_kind": self.timestamp_kind,
            "signed_digest": self.signed_digest.hex(),
            "chain": [c.to_dict() for c in self.chain],
        }


@dataclass(frozen=True, slots=True)
class CatalogMatch:
    """A catalog that lists the file's hash."""

    path: str
    member_tag: str
    digest_algorithm: str
    signature: SignatureResult  # the catalog's own signature

    def to_dict(self) -> dict[str, object]:
        return {
            "path": self.path,
            "member_tag": self.member_tag,
            "digest_algorithm": self.digest_algorithm,
            "signature": self.signature.to_dict(),
        }


@dataclass(frozen=True, slots=True)
class Decision:
    """What a policy made of a report. In audit mode a denial is reported, not enforced."""

    allowed: bool
    mode: str  # "audit" | "enforce"
    policy_name: str
    policy_id: str
    reasons: tuple[Finding, ...] = ()

    @property
    def enforced_denial(self) -> bool:
        return not self.allowed and self.mode == "enforce"

    def to_dict(self) -> dict[str, object]:
        return {
            "allowed": self.allowed,
            "mode": self.mode,
            "policy_name": self.policy_name,
            "policy_id": self.policy_id,
            "reasons": [f.to_dict() for f in self.reasons],
        }


@dataclass(frozen=True, slots=True)
class Report:
    """Everything found about one file. ``findings`` holds every problem, not the first."""

    path: str
    status: Status
    findings: tuple[Finding, ...] = ()
    signatures: tuple[SignatureResult, ...] = ()
    image: ImageInfo | None = None
    # Authenticode digests as Windows computes them (zero-padded to 8 bytes when unsigned).
    authentihash: Mapping[str, str] = field(default_factory=dict)
    # Unpadded variants; they differ from ``authentihash`` only for unsigned, unaligned files.
    authentihash_unpadded: Mapping[str, str] = field(default_factory=dict)
    # WDAC "Hash Page" values: the header page only.
    first_page_hash: Mapping[str, str] = field(default_factory=dict)
    # Whole-file hashes (catalog members that are not PE, LOLDrivers file hashes).
    flat_hash: Mapping[str, str] = field(default_factory=dict)
    catalog: CatalogMatch | None = None
    decision: Decision | None = None  # set when a policy was applied
    error: str | None = None  # the one-line reason when the file could not be parsed

    @property
    def event_ids(self) -> list[int]:
        """Events this file raises: its findings plus any policy denial (audit or enforce)."""
        found = [f.event_id for f in self.findings]
        if self.decision is not None:
            found += [f.event_id for f in self.decision.reasons]
        return sorted({e for e in found if e is not None})

    @property
    def errors(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity is Severity.ERROR)

    @property
    def ok(self) -> bool:
        return self.status is Status.VALID

    def __bool__(self) -> bool:
        return self.ok

    def to_dict(self) -> dict[str, object]:
        return {
            "path": self.path,
            "status": str(self.status),
            "event_ids": self.event_ids,
            "findings": [f.to_dict() for f in self.findings],
            "signatures": [s.to_dict() for s in self.signatures],
            "authentihash": dict(self.authentihash),
            "authentihash_unpadded": dict(self.authentihash_unpadded),
            "first_page_hash": dict(self.first_page_hash),
            "flat_hash": dict(self.flat_hash),
            "catalog": self.catalog.to_dict() if self.catalog else None,
            "decision": self.decision.to_dict() if self.decision else None,
            "image": _image_dict(self.image),
            "error": self.error,
        }


def _image_dict(image: ImageInfo | None) -> dict[str, object] | None:
    if image is None:
        return None
    return {
        "machine": f"{image.machine:#06x}",
        "pe32_plus": image.pe32_plus,
        "subsystem": image.subsystem,
        "kernel_driver": image.is_kernel_driver,
        "efi": image.is_efi,
        "force_integrity": image.force_integrity,
        "sections": image.sections,
        "size": image.size,
    }


def decide_status(
    *, malformed: bool, signed: bool, findings: tuple[Finding, ...] | list[Finding]
) -> Status:
    """Status precedence: malformed > invalid > unsigned > valid.

    An unsigned file stays ``unsigned`` even when that raises an event (an unsigned driver
    raises 5038); a signed file with any error finding is ``invalid``.
    """
    if malformed:
        return Status.MALFORMED
    if not signed:
        return Status.UNSIGNED
    if any(f.severity is Severity.ERROR for f in findings):
        return Status.INVALID
    return Status.VALID
