"""The verification report: a value describing everything found about one file.

``to_dict`` gives the JSON shape the CLI prints; ``from_dict`` reads it back (the results
cache stores it), checking every type so a damaged or foreign value is a MalformedError, never
a report with wrong-typed fields.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import MalformedError
from .findings import Finding, Severity

if TYPE_CHECKING:
    from .authenticode.signer import SignerVerdict


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

    @classmethod
    def from_dict(cls, d: object) -> ImageInfo:
        m = _mapping(d, "image")
        return cls(
            machine=_hex(m, "machine"),
            pe32_plus=_bool(m, "pe32_plus"),
            subsystem=_int(m, "subsystem"),
            characteristics=_hex(m, "characteristics"),
            dll_characteristics=_hex(m, "dll_characteristics"),
            is_kernel_driver=_bool(m, "kernel_driver"),
            is_efi=_bool(m, "efi"),
            force_integrity=_bool(m, "force_integrity"),
            sections=_int(m, "sections"),
            size=_int(m, "size"),
        )


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

    @classmethod
    def from_dict(cls, d: object) -> CertInfo:
        m = _mapping(d, "certificate")
        return cls(
            subject=_str(m, "subject"),
            issuer=_str(m, "issuer"),
            serial=_str(m, "serial"),
            sha1=_str(m, "sha1"),
            tbs_hash=_str(m, "tbs_hash"),
            not_before=_time(m, "not_before"),
            not_after=_time(m, "not_after"),
            ekus=tuple(_str_list(m, "ekus")),
        )


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

    @classmethod
    def from_dict(cls, d: object) -> SignatureResult:
        m = _mapping(d, "signature")
        stamp = _opt(m, "timestamp", _time)
        try:
            digest = bytes.fromhex(_str(m, "signed_digest"))
        except ValueError:
            raise MalformedError(None, "signed_digest", "not hexadecimal") from None
        return cls(
            index=_int(m, "index"),
            parent=_opt(m, "parent", _int),
            entry=_int(m, "entry"),
            digest_algorithm=_str(m, "digest_algorithm"),
            image_hash=_enum(Check, m, "image_hash"),
            page_hashes=_enum(Check, m, "page_hashes"),
            page_hash_algorithm=_opt(m, "page_hash_algorithm", _str),
            signature_valid=_bool(m, "signature_valid"),
            trusted=_bool(m, "trusted"),
            signer=_opt(m, "signer", _str),
            issuer=_opt(m, "issuer", _str),
            timestamp=stamp,
            timestamp_kind=_opt(m, "timestamp_kind", _str),
            chain=tuple(CertInfo.from_dict(c) for c in _list(m, "chain")),
            signed_digest=digest,
            valid=_bool(m, "valid"),
        )


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

    @classmethod
    def from_dict(cls, d: object) -> CatalogMatch:
        m = _mapping(d, "catalog")
        return cls(
            path=_str(m, "path"),
            member_tag=_str(m, "member_tag"),
            digest_algorithm=_str(m, "digest_algorithm"),
            signature=SignatureResult.from_dict(m.get("signature")),
        )


@dataclass(frozen=True, slots=True)
class Decision:
    """What a policy made of a report. In audit mode a denial is reported, not enforced."""

    allowed: bool
    mode: str  # "audit" | "enforce"
    policy_name: str
    policy_id: str
    reasons: tuple[Finding, ...] = ()
    policy_guid: str = ""  # the SiPolicy GUID, {lower-case}; "" when the policy has none
    policy_hash: str = ""  # SHA-256 hex of the policy file as loaded; "" when not from a file

    @property
    def enforced_denial(self) -> bool:
        return not self.allowed and self.mode == "enforce"

    def to_dict(self) -> dict[str, object]:
        return {
            "allowed": self.allowed,
            "mode": self.mode,
            "policy_name": self.policy_name,
            "policy_id": self.policy_id,
            "policy_guid": self.policy_guid,
            "policy_hash": self.policy_hash,
            "reasons": [f.to_dict() for f in self.reasons],
        }

    @classmethod
    def from_dict(cls, d: object) -> Decision:
        m = _mapping(d, "decision")
        return cls(
            allowed=_bool(m, "allowed"),
            mode=_str(m, "mode"),
            policy_name=_str(m, "policy_name"),
            policy_id=_str(m, "policy_id"),
            reasons=tuple(Finding.from_dict(f) for f in _list(m, "reasons")),
            # Absent in reports written before these fields existed.
            policy_guid=_str(m, "policy_guid") if "policy_guid" in m else "",
            policy_hash=_str(m, "policy_hash") if "policy_hash" in m else "",
        )


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
    # VS_VERSION_INFO names and version (pe.versioninfo.VersionInfo.to_dict()); None: no resource
    version_info: Mapping[str, str] | None = None

    @property
    def event_ids(self) -> list[int]:
        """Events this file raises: its findings plus an enforced policy denial. In audit mode
        Windows logs only the CodeIntegrity 3076 (the file loads; no Security 5038 accompanies
        it in any capture, see docs/evtx.md), so an audit denial adds no Security event."""
        found = [f.event_id for f in self.findings]
        if self.decision is not None and self.decision.mode != "audit":
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
            "version_info": dict(self.version_info) if self.version_info is not None else None,
        }

    @classmethod
    def from_dict(cls, d: object) -> Report:
        """Rebuild a report from :meth:`to_dict` output; derived keys (``event_ids``, a
        finding's severity and event) are recomputed, not read. Raises MalformedError."""
        m = _mapping(d, "report")
        return cls(
            path=_str(m, "path"),
            status=_enum(Status, m, "status"),
            findings=tuple(Finding.from_dict(f) for f in _list(m, "findings")),
            signatures=tuple(SignatureResult.from_dict(s) for s in _list(m, "signatures")),
            image=_opt(m, "image", lambda _m, _k: ImageInfo.from_dict(_m[_k])),
            authentihash=_str_map(m, "authentihash"),
            authentihash_unpadded=_str_map(m, "authentihash_unpadded"),
            first_page_hash=_str_map(m, "first_page_hash"),
            flat_hash=_str_map(m, "flat_hash"),
            catalog=_opt(m, "catalog", lambda _m, _k: CatalogMatch.from_dict(_m[_k])),
            decision=_opt(m, "decision", lambda _m, _k: Decision.from_dict(_m[_k])),
            error=_opt(m, "error", _str),
            version_info=_opt(m, "version_info", _str_map),
        )


def raises_events(event_ids: Sequence[int], decision: Decision | None) -> bool:
    """Whether a file judged so raises any event: a finding with an event id, or a policy
    denial (an audit-mode denial raises its 3076 alone)."""
    return bool(event_ids) or (decision is not None and not decision.allowed)


def _image_dict(image: ImageInfo | None) -> dict[str, object] | None:
    if image is None:
        return None
    return {
        "machine": f"{image.machine:#06x}",
        "characteristics": f"{image.characteristics:#06x}",
        "dll_characteristics": f"{image.dll_characteristics:#06x}",
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


# --- typed reads for from_dict: each names the key that is missing or of the wrong type ------


_E = TypeVar("_E", bound=enum.StrEnum)
_T = TypeVar("_T")


def _mapping(d: object, what: str) -> Mapping[str, Any]:
    if not isinstance(d, Mapping):
        raise MalformedError(None, what, f"expected an object, got {type(d).__name__}")
    return d


def _value(m: Mapping[str, Any], key: str, kind: type | tuple[type, ...], name: str) -> Any:
    if key not in m:
        raise MalformedError(None, key, "missing")
    value = m[key]
    # bool is an int subclass: a flag is never a count and a count never a flag.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise MalformedError(None, key, f"expected {name}, got {type(value).__name__}")
    return value


def _int(m: Mapping[str, Any], key: str) -> int:
    return int(_value(m, key, int, "an integer"))


def _bool(m: Mapping[str, Any], key: str) -> bool:
    return bool(_value(m, key, bool, "true or false"))


def _str(m: Mapping[str, Any], key: str) -> str:
    return str(_value(m, key, str, "a string"))


def _hex(m: Mapping[str, Any], key: str) -> int:
    try:
        return int(_str(m, key), 16)
    except ValueError:
        raise MalformedError(None, key, "not a hexadecimal number") from None


def _time(m: Mapping[str, Any], key: str) -> datetime:
    try:
        return datetime.fromisoformat(_str(m, key))
    except ValueError:
        raise MalformedError(None, key, "not an ISO 8601 time") from None


def _list(m: Mapping[str, Any], key: str) -> list[Any]:
    return list(_value(m, key, list, "a list"))


def _str_list(m: Mapping[str, Any], key: str) -> list[str]:
    items = _list(m, key)
    if not all(isinstance(i, str) for i in items):
        raise MalformedError(None, key, "expected a list of strings")
    return items


def _str_map(m: Mapping[str, Any], key: str) -> dict[str, str]:
    value = _value(m, key, Mapping, "an object")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise MalformedError(None, key, "expected an object of strings")
    return dict(value)


def _enum(kind: type[_E], m: Mapping[str, Any], key: str) -> _E:
    try:
        return kind(_str(m, key))
    except ValueError:
        raise MalformedError(None, key, f"not a known {kind.__name__}") from None


def _opt(m: Mapping[str, Any], key: str, read: Callable[[Mapping[str, Any], str], _T]) -> _T | None:
    """``None`` when the key is absent or null, else ``read(m, key)``."""
    return None if m.get(key) is None else read(m, key)


def signature_result(
    verdict: SignerVerdict,
    *,
    index: int,
    parent: int | None,
    entry: int,
    digest_algorithm: str,
    image_hash: Check,
    page_hashes: Check,
    page_hash_algorithm: str | None,
    signed_digest: bytes,
    valid: bool,
) -> SignatureResult:
    """A report's view of one signature: what the engine checked plus the signer's verdict."""
    signer = verdict.signer
    return SignatureResult(
        index=index,
        parent=parent,
        entry=entry,
        digest_algorithm=digest_algorithm,
        image_hash=image_hash,
        page_hashes=page_hashes,
        page_hash_algorithm=page_hash_algorithm,
        signature_valid=verdict.signature_valid,
        trusted=verdict.trusted,
        signer=signer.subject if signer else None,
        issuer=signer.issuer if signer else None,
        timestamp=verdict.timestamp,
        timestamp_kind=verdict.timestamp_kind,
        chain=verdict.chain,
        signed_digest=signed_digest,
        valid=valid,
    )
