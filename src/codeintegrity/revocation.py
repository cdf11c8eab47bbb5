"""Offline revocation: CRLs and disallowed certificates, judged with Windows timestamp semantics.

A signing chain is revoked for Code Integrity (event 6281) when a certificate below the root
appears on a CRL its issuer signed and

- the signature has no valid timestamp (the revocation applies now), or
- the signing certificate carries the lifetime-signing EKU (1.3.6.1.4.1.311.10.3.13: the
  signature dies with the certificate, a timestamp does not extend it), or
- the revocation date is at or before the timestamp (CAs backdate revocation dates on key
  compromise precisely to kill signatures made before the revocation was published).

A CRL whose issuer name matches but whose signature does not verify with the issuer's key is
ignored (a forged CRL must not revoke, nor "unrevoke", anything) and reported as
``REVOCATION_UNKNOWN``. Stale CRLs (past nextUpdate) are still used: offline, an old CRL is the
best knowledge there is, and a revoked entry never becomes valid again.

Disallowed certificates (thumbprints or TBS hashes, like Windows' disallowed store) are revoked
whatever the time: ``POLICY_CERT_DISALLOWED``.

Loading (file I/O) happens in :meth:`RevocationSources.load`; :func:`check_chain` is pure.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .authenticode.certcache import LRU
from .authenticode.certcache import der as _cert_der
from .errors import PolicyError
from .findings import Finding, FindingCode

if TYPE_CHECKING:
    from asn1crypto import x509 as asn1_x509
    from cryptography import x509 as crypto_x509

_PEM_CRL = re.compile(
    rb"-----BEGIN X509 CRL-----\s*(?P<body>[A-Za-z0-9+/=\s]+?)-----END X509 CRL-----"
)
_HEX = re.compile(r"[0-9a-f]+")
# Lengths of the identifiers a disallowed entry may be: SHA-1/SHA-256 thumbprints, and TBS
# hashes made with SHA-1/SHA-256/SHA-384/SHA-512 (the certificate's own signature hash).
_DISALLOWED_LENGTHS = (40, 64, 96, 128)
# Per process, bounded: an issuer's public key, and whether a loaded CRL's signature verifies
# with it, are the same for every file whose chain names that issuer. What is judged per file
# (the serial's entry, its date against the file's timestamp) is never cached.
_ISSUER_KEYS: LRU[bytes, Any] = LRU(256)
_CRL_SIGNATURES: LRU[tuple[int, bytes], tuple[LoadedCRL, bool]] = LRU(1024)
_IDENTIFIERS: LRU[bytes, tuple[tuple[str, str], ...]] = LRU(1024)


@dataclass(frozen=True, slots=True)
class LoadedCRL:
    """One parsed CRL and where it came from (for finding details)."""

    source: str
    crl: crypto_x509.CertificateRevocationList
    issuer_der: bytes  # the CRL issuer name, DER: matched byte-for-byte like CryptoAPI


@dataclass(frozen=True)
class RevocationSources:
    """CRLs by issuer name plus disallowed certificate identifiers (lower-case hex)."""

    crls: tuple[LoadedCRL, ...] = ()
    disallowed: frozenset[str] = frozenset()
    _by_issuer: dict[bytes, tuple[LoadedCRL, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        index: dict[bytes, list[LoadedCRL]] = {}
        for crl in self.crls:
            index.setdefault(crl.issuer_der, []).append(crl)
        object.__setattr__(self, "_by_issuer", {k: tuple(v) for k, v in index.items()})

    @classmethod
    def load(
        cls, crl_paths: Iterable[str | Path] = (), disallowed: Iterable[str] = ()
    ) -> RevocationSources:
        """Read CRL files (DER, or PEM with one or more CRLs) from disk: the I/O edge."""
        from .policy.inputs import MAX_CRL_BYTES, read_bounded

        blobs = [(str(path), read_bounded(path, "CRL", MAX_CRL_BYTES)) for path in crl_paths]
        return cls.from_bytes(blobs, disallowed)

    @classmethod
    def from_bytes(
        cls, crls: Iterable[tuple[str, bytes]] = (), disallowed: Iterable[str] = ()
    ) -> RevocationSources:
        """Parse CRLs given as ``(name, bytes)`` pairs; pure."""
        loaded: list[LoadedCRL] = []
        for name, data in crls:
            loaded.extend(parse_crls(name, data))
        return cls(tuple(loaded), normalize_disallowed(disallowed))

    def __or__(self, other: RevocationSources) -> RevocationSources:
        return RevocationSources(self.crls + other.crls, self.disallowed | other.disallowed)

    def crls_for(self, issuer_der: bytes) -> tuple[LoadedCRL, ...]:
        return self._by_issuer.get(issuer_der, ())


def normalize_disallowed(values: Iterable[str]) -> frozenset[str]:
    """Lower-case hex identifiers; spaces and colons (as certutil prints them) removed."""
    out: set[str] = set()
    for raw in values:
        value = raw.strip().lower().replace(":", "").replace(" ", "")
        if not _HEX.fullmatch(value) or len(value) not in _DISALLOWED_LENGTHS:
            raise PolicyError(
                f"disallowed certificate {raw!r}: expected a thumbprint or TBS hash of "
                "40, 64, 96 or 128 hex digits"
            )
        out.add(value)
    return frozenset(out)


def parse_crls(name: str, data: bytes) -> list[LoadedCRL]:
    """Every CRL in ``data`` (one DER CRL, or PEM blocks). Raises PolicyError naming ``name``."""
    import base64
    import binascii

    from cryptography import x509

    ders: list[bytes] = []
    if b"-----BEGIN" in data[:4096] or b"-----BEGIN X509 CRL" in data:
        for match in _PEM_CRL.finditer(data):
            try:
                ders.append(base64.b64decode(b"".join(match.group("body").split()), validate=True))
            except (binascii.Error, ValueError):
                raise PolicyError(f"{name}: CRL PEM block is not valid base64") from None
        if not ders:
            raise PolicyError(f"{name}: no 'BEGIN X509 CRL' PEM block found")
    else:
        ders.append(data)
    out: list[LoadedCRL] = []
    for number, der in enumerate(ders, 1):
        try:
            crl = x509.load_der_x509_crl(der)
            issuer_der = crl.issuer.public_bytes()
            # Touch the entries now so a malformed entry fails here, not during a check.
            for _ in crl:
                pass
        except (ValueError, TypeError) as exc:
            where = f" (CRL #{number})" if len(ders) > 1 else ""
            reason = str(exc).splitlines()[0] if str(exc) else "cannot be parsed"
            raise PolicyError(f"{name}{where}: not a valid X.509 CRL: {reason}") from None
        out.append(LoadedCRL(name, crl, issuer_der))
    return out


def cert_identifiers(cert: asn1_x509.Certificate) -> dict[str, str]:
    """SHA-1/SHA-256 thumbprints and the TBS hash (with the cert's own signature hash)."""
    der = cert.dump()
    ids = {
        "sha1 thumbprint": hashlib.sha1(der).hexdigest(),  # noqa: S324 - an identifier
        "sha256 thumbprint": hashlib.sha256(der).hexdigest(),
    }
    try:
        algorithm = cert.hash_algo
    except (ValueError, KeyError):
        algorithm = "sha256"  # unknown signature algorithm (e.g. RSASSA-PSS): a best effort
    if algorithm in {"md5", "sha1", "sha256", "sha384", "sha512"}:
        tbs = cert["tbs_certificate"].dump()
        ids["tbs hash"] = hashlib.new(algorithm, tbs).hexdigest()
    return ids


def check_chain(
    sources: RevocationSources,
    chain_certs: Sequence[asn1_x509.Certificate],
    *,
    timestamp: datetime | None,
    lifetime_signing: bool,
    signature: int,
) -> list[Finding]:
    """Revocation findings for one signature's chain (leaf first, anchor last). Pure."""
    findings: list[Finding] = []
    findings.extend(_disallowed(sources, chain_certs, signature))
    if not sources.crls:
        return findings
    at = _aware(timestamp) if timestamp is not None and not lifetime_signing else None
    for position, cert in enumerate(chain_certs):
        if position == len(chain_certs) - 1 and _is_self_issued(cert):
            continue  # the anchor: nothing above it can revoke it
        issuer = chain_certs[position + 1] if position + 1 < len(chain_certs) else None
        try:
            findings.extend(_check_one(sources, cert, issuer, position, at, timestamp, signature))
        except (ValueError, TypeError, KeyError) as exc:
            # asn1crypto parses lazily: a malformed field surfaces here, not at load time.
            findings.append(
                Finding(
                    FindingCode.REVOCATION_UNKNOWN,
                    f"chain certificate #{position} cannot be checked: {exc}".splitlines()[0],
                    signature=signature,
                )
            )
    return findings


def _check_one(
    sources: RevocationSources,
    cert: asn1_x509.Certificate,
    issuer: asn1_x509.Certificate | None,
    position: int,
    at: datetime | None,
    timestamp: datetime | None,
    signature: int,
) -> list[Finding]:
    what = "signing certificate" if position == 0 else f"chain certificate #{position}"
    subject = _subject(cert)
    candidates = sources.crls_for(cert.issuer.dump())
    if not candidates:
        if position != 0:
            return []  # only the signer's status is worth an "unknown" line
        return [
            Finding(
                FindingCode.REVOCATION_UNKNOWN,
                f"no CRL from the issuer of the {what} ({subject})",
                signature=signature,
            )
        ]
    verified, rejected = _verified_crls(candidates, issuer)
    findings: list[Finding] = [
        Finding(
            FindingCode.REVOCATION_UNKNOWN,
            f"CRL {crl.source} names the issuer of the {what} but {reason}; ignored",
            signature=signature,
        )
        for crl, reason in rejected
    ]
    if not verified:
        return findings
    serial = cert.serial_number
    for crl in verified:
        entry = crl.crl.get_revoked_certificate_by_serial_number(serial)
        if entry is None or _removed_from_crl(entry):
            continue
        revoked_at = _aware(entry.revocation_date_utc)
        if at is not None and revoked_at > at:
            continue  # revoked after a valid timestamp: the signature stays valid
        if timestamp is None:
            why = "no valid timestamp"
        elif at is None:
            why = "lifetime-signing certificate: the timestamp does not extend it"
        else:
            why = f"revoked at or before the timestamp {_iso(_aware(timestamp))}"
        findings.append(
            Finding(
                FindingCode.CHAIN_REVOKED,
                f"{what} {subject} (serial {serial:x}) revoked {_iso(revoked_at)} "
                f"by {crl.source} ({why})",
                signature=signature,
            )
        )
        break
    return findings


def _verified_crls(
    candidates: tuple[LoadedCRL, ...], issuer: asn1_x509.Certificate | None
) -> tuple[list[LoadedCRL], list[tuple[LoadedCRL, str]]]:
    """Split CRLs into those whose signature verifies with the issuer's key and the rest."""
    if issuer is None:
        return [], [(crl, "the issuer certificate is not in the chain") for crl in candidates]
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm

    issuer_key = _cert_der(issuer)
    try:
        public_key: Any = _ISSUER_KEYS.get(
            issuer_key, lambda: x509.load_der_x509_certificate(issuer.dump()).public_key()
        )
    except (ValueError, UnsupportedAlgorithm):
        return [], [(crl, "the issuer's public key cannot be loaded") for crl in candidates]
    verified: list[LoadedCRL] = []
    rejected: list[tuple[LoadedCRL, str]] = []
    for crl in candidates:

        def check(crl: LoadedCRL = crl) -> tuple[LoadedCRL, bool]:
            try:
                return crl, crl.crl.is_signature_valid(public_key)
            except (TypeError, ValueError, UnsupportedAlgorithm):
                return crl, False

        # Keyed by the CRL object's id: the entry holds the object, so the id stays its own.
        _pinned, ok = _CRL_SIGNATURES.get((id(crl), issuer_key), check)
        if ok:
            verified.append(crl)
        else:
            rejected.append((crl, "its signature does not verify with the issuer's key"))
    return verified, rejected


def _disallowed(
    sources: RevocationSources, chain_certs: Sequence[asn1_x509.Certificate], signature: int
) -> list[Finding]:
    if not sources.disallowed:
        return []
    findings = []
    for position, cert in enumerate(chain_certs):
        for kind, value in _identifiers(cert):
            if value in sources.disallowed:
                findings.append(
                    Finding(
                        FindingCode.POLICY_CERT_DISALLOWED,
                        f"certificate #{position} {_subject(cert)} is disallowed ({kind} {value})",
                        signature=signature,
                    )
                )
                break
    return findings


def _identifiers(cert: asn1_x509.Certificate) -> tuple[tuple[str, str], ...]:
    """:func:`cert_identifiers`, computed once per distinct certificate."""
    return _IDENTIFIERS.get(_cert_der(cert), lambda: tuple(cert_identifiers(cert).items()))


def _removed_from_crl(entry: crypto_x509.RevokedCertificate) -> bool:
    """Delta-CRL 'removeFromCRL' entries un-revoke (certificate hold released)."""
    from cryptography import x509

    try:
        reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    except (x509.ExtensionNotFound, ValueError):
        return False
    return reason is x509.ReasonFlags.remove_from_crl


def _is_self_issued(cert: asn1_x509.Certificate) -> bool:
    try:
        return bool(cert.subject.dump() == cert.issuer.dump())
    except (ValueError, TypeError):
        return False


def _subject(cert: asn1_x509.Certificate) -> str:
    try:
        return str(cert.subject.human_friendly)
    except (ValueError, KeyError, TypeError):
        return "<unreadable subject>"


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
