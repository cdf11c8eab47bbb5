"""Certificate-chain rules Windows applies on top of RFC 5280 path validation.

pyhanko-certvalidator builds and validates the path (signatures, validity, name constraints);
this module holds the rules CryptoAPI (CertGetCertificateChain + the Authenticode policy) adds or
judges differently, each with its own finding code (docs/chain-rules.md cites the sources):

- the requested EKU must be allowed by every certificate of the chain that has an EKU extension
  (the chain's usage is the intersection; no extension = no restriction);
- RSA and DSA keys of at least 1024 bits anywhere in the chain (KB2661254), except for
  code signed with a timestamp before 2010-01-01;
- no MD2/MD4/MD5 certificate signatures (KB2862973), except for code timestamped before
  2009-03-01; the anchor's self-signature is not judged;
- ECDSA keys on the curves Windows implements (P-256, P-384, P-521) only;
- issuing CAs must assert basicConstraints CA=TRUE; pathLenConstraint holds (the anchor's too);
- a critical extension Windows does not understand fails the chain.

Rules are evaluated once per validated path (the caller caches them); what depends on the
signature (the timestamp time, the requested EKU) is applied per call by :func:`applicable`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..findings import FindingCode

# KB2661254: keys under 1024 bits are weak; code timestamped before 2010 is exempt.
MIN_RSA_BITS = 1024
MIN_DSA_BITS = 1024
WEAK_RSA_EXEMPT_BEFORE = datetime(2010, 1, 1, tzinfo=UTC)
# KB2862973 / MSRC: MD5 certificate signatures blocked; binaries signed before March 2009 exempt.
WEAK_HASHES = frozenset({"md2", "md4", "md5"})
MD5_EXEMPT_BEFORE = datetime(2009, 3, 1, tzinfo=UTC)
# CNG's named curves for ECDSA certificates (BCRYPT_ECDSA_P256/P384/P521_ALGORITHM).
ACCEPTED_CURVES = frozenset({"secp256r1", "secp384r1", "secp521r1"})
ANY_EKU = "2.5.29.37.0"
# Extensions CryptoAPI understands when critical (RFC 5280 ones plus Microsoft's application
# policies), as asn1crypto names or dotted OIDs.
KNOWN_CRITICAL = frozenset(
    {
        "basic_constraints",
        "key_usage",
        "extended_key_usage",
        "name_constraints",
        "certificate_policies",
        "policy_mappings",
        "policy_constraints",
        "inhibit_any_policy",
        "subject_alt_name",
        "issuer_alt_name",
        "key_identifier",
        "authority_key_identifier",
        "crl_distribution_points",
        "freshest_crl",
        "authority_information_access",
        "ocsp_no_check",
        "1.3.6.1.4.1.311.21.10",  # szOID_APPLICATION_CERT_POLICIES
        "1.3.6.1.4.1.311.21.11",  # szOID_APPLICATION_POLICY_MAPPINGS
        "1.3.6.1.4.1.311.21.12",  # szOID_APPLICATION_POLICY_CONSTRAINTS
    }
)
_ASN1_ERRORS = (ValueError, TypeError, KeyError, IndexError, OverflowError)


@dataclass(frozen=True, slots=True)
class Violation:
    """One rule broken by one certificate of a chain (position 0 = leaf)."""

    code: FindingCode
    position: int
    subject: str
    detail: str
    # A code-signing signature with a valid timestamp before this moment is exempt.
    exempt_before: datetime | None = None

    def message(self) -> str:
        return f"{self.detail} [certificate {self.position}: {self.subject}]"


@dataclass(frozen=True, slots=True)
class ChainFacts:
    """What the rules found on one path, independent of the signature being judged."""

    violations: tuple[Violation, ...]
    # (position, subject, EKU OIDs) of each issuer (position >= 1) that has an EKU extension.
    issuer_ekus: tuple[tuple[int, str, frozenset[str]], ...]


def evaluate(certs: tuple[Any, ...], anchored: bool) -> ChainFacts:
    """Run every signature-independent rule on ``certs`` (leaf first; the anchor last when
    ``anchored``)."""
    violations: list[Violation] = []
    issuer_ekus: list[tuple[int, str, frozenset[str]]] = []
    last = len(certs) - 1
    for position, cert in enumerate(certs):
        subject = subject_line(cert)
        is_anchor = anchored and position == last
        violations.extend(_key_rules(cert, position, subject))
        if not (is_anchor or _self_signed(cert)):
            violations.extend(_hash_rule(cert, position, subject))
        if position >= 1:
            if not is_anchor:
                violations.extend(_ca_rule(cert, position, subject))
            violations.extend(_path_length_rule(certs, cert, position, subject))
            ekus = _ekus(cert)
            if ekus is not None:
                issuer_ekus.append((position, subject, ekus))
        if not is_anchor:
            violations.extend(_critical_rule(cert, position, subject))
    return ChainFacts(tuple(violations), tuple(issuer_ekus))


def applicable(facts: ChainFacts, eku: str, timestamped: datetime | None) -> list[Violation]:
    """The violations that count for a signature asking for ``eku`` and carrying a valid
    timestamp at ``timestamped`` (None: no timestamp, or not a code-signing chain)."""
    out = [
        v
        for v in facts.violations
        if v.exempt_before is None or timestamped is None or timestamped >= v.exempt_before
    ]
    for position, subject, ekus in facts.issuer_ekus:
        if eku not in ekus and ANY_EKU not in ekus:
            allowed = ", ".join(sorted(ekus)) or "(none)"
            out.append(
                Violation(
                    FindingCode.CHAIN_EKU_NOT_ALLOWED_BY_ISSUER,
                    position,
                    subject,
                    f"issuer allows only {allowed}, not {eku}",
                )
            )
    return out


def subject_line(cert: Any) -> str:
    """A short, one-line subject for reports (CN, else the whole name)."""
    try:
        name = cert.subject
        native = name.native
        common = native.get("common_name") if isinstance(native, dict) else None
        if isinstance(common, list):
            common = common[-1]
        text = str(common) if common else name.human_friendly
    except _ASN1_ERRORS:
        return "(unreadable subject)"
    return " ".join(text.split())[:120]


def _self_signed(cert: Any) -> bool:
    try:
        return bool(cert.self_issued) and cert.self_signed != "no"
    except _ASN1_ERRORS:
        return False


def _key_rules(cert: Any, position: int, subject: str) -> list[Violation]:
    try:
        key = cert.public_key
        algorithm = key.algorithm
        if algorithm in ("rsa", "rsassa_pss"):
            bits = key.bit_size
            if bits < MIN_RSA_BITS:
                return [
                    Violation(
                        FindingCode.CHAIN_WEAK_KEY,
                        position,
                        subject,
                        f"{bits}-bit RSA key (minimum {MIN_RSA_BITS})",
                        WEAK_RSA_EXEMPT_BEFORE,
                    )
                ]
        elif algorithm == "dsa":
            bits = key.bit_size
            if bits < MIN_DSA_BITS:
                return [
                    Violation(
                        FindingCode.CHAIN_WEAK_KEY,
                        position,
                        subject,
                        f"{bits}-bit DSA key (minimum {MIN_DSA_BITS})",
                        WEAK_RSA_EXEMPT_BEFORE,
                    )
                ]
        elif algorithm == "ec":
            curve_kind, curve = key.curve
            if curve_kind != "named" or curve not in ACCEPTED_CURVES:
                shown = curve if curve_kind == "named" else f"{curve_kind} parameters"
                return [
                    Violation(
                        FindingCode.CHAIN_UNSUPPORTED_KEY,
                        position,
                        subject,
                        f"ECDSA key on {shown} (Windows accepts P-256, P-384, P-521)",
                    )
                ]
        else:
            return [
                Violation(
                    FindingCode.CHAIN_UNSUPPORTED_KEY,
                    position,
                    subject,
                    f"public key algorithm {algorithm} is not supported",
                )
            ]
    except KeyError as exc:  # asn1crypto has no spec for the algorithm (e.g. ML-DSA)
        return [
            Violation(
                FindingCode.CHAIN_UNSUPPORTED_KEY,
                position,
                subject,
                f"public key algorithm {_line(exc).strip(chr(39))} is not supported",
            )
        ]
    except _ASN1_ERRORS as exc:
        return [
            Violation(
                FindingCode.CHAIN_UNSUPPORTED_KEY,
                position,
                subject,
                f"public key cannot be read: {_line(exc)}",
            )
        ]
    return []


def _hash_rule(cert: Any, position: int, subject: str) -> list[Violation]:
    try:
        algorithm = cert["signature_algorithm"]
        name = algorithm.hash_algo
    except _ASN1_ERRORS:
        name = None
    if name in WEAK_HASHES:
        return [
            Violation(
                FindingCode.CHAIN_WEAK_SIGNATURE_HASH,
                position,
                subject,
                f"certificate signed with {name.upper()}",
                MD5_EXEMPT_BEFORE if name == "md5" else None,
            )
        ]
    return []


def _ca_rule(cert: Any, position: int, subject: str) -> list[Violation]:
    try:
        constraints = cert.basic_constraints_value
        is_ca = constraints is not None and bool(constraints["ca"].native)
    except _ASN1_ERRORS:
        is_ca = False
    if is_ca:
        return []
    return [
        Violation(
            FindingCode.CHAIN_ISSUER_NOT_CA,
            position,
            subject,
            "issues certificates but lacks basicConstraints CA=TRUE",
        )
    ]


def _path_length_rule(
    certs: tuple[Any, ...], cert: Any, position: int, subject: str
) -> list[Violation]:
    try:
        constraints = cert.basic_constraints_value
        limit = None if constraints is None else constraints["path_len_constraint"].native
        if limit is None:
            return []
        # Intermediate CAs below this one (self-issued ones do not count, RFC 5280 4.2.1.9).
        below = sum(1 for c in certs[1:position] if not c.self_issued)
    except _ASN1_ERRORS:
        return []
    if below <= limit:
        return []
    return [
        Violation(
            FindingCode.CHAIN_PATH_LENGTH,
            position,
            subject,
            f"pathLenConstraint {limit} but {below} CA certificate(s) below it",
        )
    ]


def _critical_rule(cert: Any, position: int, subject: str) -> list[Violation]:
    try:
        unknown = sorted(
            str(ext["extn_id"].native)
            for ext in cert["tbs_certificate"]["extensions"]
            if ext["critical"].native
            and ext["extn_id"].native not in KNOWN_CRITICAL
            and ext["extn_id"].dotted not in KNOWN_CRITICAL
        )
    except _ASN1_ERRORS as exc:
        unknown = [f"(unreadable extensions: {_line(exc)})"]
    if not unknown:
        return []
    return [
        Violation(
            FindingCode.CHAIN_CRITICAL_EXTENSION,
            position,
            subject,
            f"critical extension(s) Windows does not understand: {', '.join(unknown)}",
        )
    ]


def _ekus(cert: Any) -> frozenset[str] | None:
    try:
        usages = cert.extended_key_usage_value
    except _ASN1_ERRORS:
        return frozenset()  # unreadable: allows nothing
    if usages is None:
        return None
    return frozenset(u.dotted for u in usages)


def _line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:100] or type(exc).__name__
