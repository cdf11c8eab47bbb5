"""Judge a verification report against a policy: ``evaluate(report, policy) -> Decision``.

Order of reasons (every one is reported, not just the first):

1. the report's own errors (a tampered, malformed or unsigned-driver file is denied);
2. policy requirements the engine was not told about (unsigned driver, missing page hashes);
3. deny rules: hashes (Authenticode padded and unpadded, flat, first page), signers,
   disallowed certificates;
4. the allowlist, when the policy has one for the file's scope;
5. the minimum digest algorithm.

In audit mode the decision still says ``allowed=False``; the caller (CLI, events) decides what
audit means. Pure: no I/O; the hash indexes are built once when the policy is loaded.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from ..findings import Finding, FindingCode
from ..report import CertInfo, Check, Decision, Report, SignatureResult, Status
from .model import DIGEST_ORDER, HashRule, Policy, SignerRule, scope_applies

if TYPE_CHECKING:
    from ..options import VerifyOptions

_C = FindingCode
_PAGE_STRICTNESS = {"off": 0, "drivers": 1, "all": 2}
_RDN_SPLIT = re.compile(r"(?<!\\)[,+]")
_ESCAPE = re.compile(r"\\([0-9A-Fa-f]{2}|.)")


def evaluate(report: Report, policy: Policy) -> Decision:
    """The policy's decision on one report, with every reason as a Finding."""
    kernel = report.image.is_kernel_driver if report.image is not None else None
    reasons: list[Finding] = []
    reasons.extend(_report_errors(report))
    reasons.extend(_requirements(report, policy, kernel))
    reasons.extend(_denied_hashes(report, policy, kernel))
    reasons.extend(_denied_signers(report, policy, kernel))
    reasons.extend(_disallowed(report, policy))
    reasons.extend(_allowlist(report, policy, kernel))
    reasons.extend(_weak_digest(report, policy))
    return Decision(
        allowed=not reasons,
        mode=policy.mode,
        policy_name=policy.name,
        policy_id=policy.id,
        reasons=tuple(reasons),
        policy_guid=policy.guid,
        policy_hash=policy.file_sha256,
    )


def apply_to_options(policy: Policy, options: VerifyOptions) -> VerifyOptions:
    """Options changed by the policy: page hashes (the stricter of the two wins), whether
    drivers must be signed (the policy's word), revocation sources (loaded here: this reads
    the CRL files), and the extra digests the hash rules need."""
    image, page, flat = policy.hash_needs()
    strict = max(
        (options.require_page_hashes, policy.require_page_hashes), key=_PAGE_STRICTNESS.__getitem__
    )
    revocation = options.revocation
    if not policy.revocation.empty:
        from ..revocation import RevocationSources

        loaded = RevocationSources.load(policy.revocation.crls, policy.revocation.disallowed)
        revocation = loaded if revocation is None else revocation | loaded
    return replace(
        options,
        require_page_hashes=strict,
        drivers_must_be_signed=policy.drivers_must_be_signed,
        revocation=revocation,
        extra_digests=options.extra_digests | image,
        first_page_digests=options.first_page_digests | page,
        flat_digests=options.flat_digests | flat,
    )


# --- 1 and 2: the report itself ------------------------------------------------------------


def _report_errors(report: Report) -> list[Finding]:
    errors = list(report.errors)
    # A status without its error findings (a hand-built report) must still deny.
    if report.status is Status.MALFORMED and not errors:
        errors.append(Finding(_C.IMAGE_MALFORMED, report.error or "file could not be parsed"))
    if report.status is Status.INVALID and not errors:
        errors.append(Finding(_C.SIGNATURE_INVALID, report.error or "the report says invalid"))
    return errors


def _requirements(report: Report, policy: Policy, kernel: bool | None) -> list[Finding]:
    codes = {f.code for f in report.findings}
    out: list[Finding] = []
    if (
        policy.drivers_must_be_signed
        and kernel
        and report.status is Status.UNSIGNED
        and report.catalog is None
        and _C.UNSIGNED_DRIVER not in codes
    ):
        out.append(Finding(_C.UNSIGNED_DRIVER, "policy: kernel drivers must be signed"))
    wanted = policy.require_page_hashes == "all" or (
        policy.require_page_hashes == "drivers" and kernel
    )
    if (
        wanted
        and report.signatures
        and _C.PAGE_HASHES_REQUIRED not in codes
        and not any(sig.page_hashes is Check.VALID for sig in report.signatures)
    ):
        out.append(
            Finding(
                _C.PAGE_HASHES_REQUIRED,
                f"policy requires page hashes ({policy.require_page_hashes}); none are signed",
                signature=report.signatures[0].index,
            )
        )
    return out


# --- 3: deny rules ---------------------------------------------------------------------------


def _digests(report: Report) -> Iterator[tuple[str, str, str]]:
    """(form, algorithm, lower-case hex) for every whole-image digest the report carries."""
    forms: tuple[tuple[str, Mapping[str, str]], ...] = (
        ("Authenticode", report.authentihash),
        ("Authenticode (unpadded)", report.authentihash_unpadded),
        ("flat file", report.flat_hash),
    )
    for form, digests in forms:
        for algorithm, value in digests.items():
            yield form, algorithm, value.lower()


def _denied_hashes(report: Report, policy: Policy, kernel: bool | None) -> list[Finding]:
    index = policy.deny_index
    out: list[Finding] = []
    seen: set[tuple[str, str]] = set()

    def hit(kind: str, form: str, algorithm: str, value: str, rule: HashRule | None) -> None:
        if rule is None or not scope_applies(rule.scope, kernel) or (kind, value) in seen:
            return
        seen.add((kind, value))
        label = f" '{rule.name}'" if rule.name else ""
        out.append(
            Finding(
                _C.POLICY_DENIED_HASH,
                f"{form} {algorithm} {value} matches deny {kind} hash rule{label}",
            )
        )

    for form, algorithm, value in _digests(report):
        hit("Authenticode", form, algorithm, value, index.image.get(value))
        hit("file", form, algorithm, value, index.file.get(value))
    for algorithm, value in report.first_page_hash.items():
        hit("first-page", "first-page", algorithm, value.lower(), index.page.get(value.lower()))
    return out


def _all_signatures(report: Report) -> list[SignatureResult]:
    sigs = list(report.signatures)
    if report.catalog is not None:
        sigs.append(report.catalog.signature)
    return sigs


def _denied_signers(report: Report, policy: Policy, kernel: bool | None) -> list[Finding]:
    if not policy.deny_signers:
        return []
    by_tbs: dict[str, list[SignerRule]] = {}
    for rule in policy.deny_signers:
        if rule.tbs is not None and scope_applies(rule.scope, kernel):
            by_tbs.setdefault(rule.tbs, []).append(rule)
    out: list[Finding] = []
    for sig in _all_signatures(report):
        match = next(_matching_rules(sig, by_tbs, policy.deny_signers, tbs_only=True), None)
        if match is not None:
            label = f" '{match.name}'" if match.name else ""
            out.append(
                Finding(
                    _C.POLICY_DENIED_SIGNER,
                    f"signer {sig.signer or '?'} matches deny signer rule{label}",
                    signature=sig.index,
                )
            )
    return out


def _disallowed(report: Report, policy: Policy) -> list[Finding]:
    """Disallowed certificates, unless the engine already checked them (revocation options)."""
    disallowed = policy.revocation.disallowed
    if not disallowed or any(f.code is _C.POLICY_CERT_DISALLOWED for f in report.findings):
        return []
    out: list[Finding] = []
    for sig in _all_signatures(report):
        for position, cert in enumerate(sig.chain):
            ids = {cert.sha1.lower(), cert.tbs_hash.lower()}
            if ids & disallowed:
                out.append(
                    Finding(
                        _C.POLICY_CERT_DISALLOWED,
                        f"certificate #{position} {cert.subject} is disallowed",
                        signature=sig.index,
                    )
                )
                break
    return out


# --- 4: the allowlist ------------------------------------------------------------------------


def _allowlist(report: Report, policy: Policy, kernel: bool | None) -> list[Finding]:
    if not policy.has_allow_rules(kernel):
        return []
    for _form, _algorithm, value in _digests(report):
        allowed = policy.allow_index.get(value)
        if allowed is not None and scope_applies(allowed.scope, kernel):
            return []
    rules = [r for r in policy.allow_signers if scope_applies(r.scope, kernel)]
    by_tbs: dict[str, list[SignerRule]] = {}
    for rule in rules:
        if rule.tbs is not None:
            by_tbs.setdefault(rule.tbs, []).append(rule)
    valid = [sig for sig in _all_signatures(report) if sig.valid]
    for sig in valid:
        if next(_matching_rules(sig, by_tbs, rules, tbs_only=False), None) is not None:
            return []
    if not valid:
        detail = "no valid signature and no allowed hash; the policy allows listed signers only"
    else:
        names = ", ".join(sorted({sig.signer or "?" for sig in valid}))
        detail = f"signer(s) {names} not in the policy's allowed signers"
    return [Finding(_C.POLICY_SIGNER_NOT_ALLOWED, detail)]


def _matching_rules(
    sig: SignatureResult,
    by_tbs: Mapping[str, list[SignerRule]],
    rules: Iterable[SignerRule],
    *,
    tbs_only: bool,
) -> Iterator[SignerRule]:
    """Rules matching a signature: a chain certificate's TBS hash (indexed), then the leaf's
    CN (CertPublisher) and EKU narrow it; rules without a TBS hash are checked one by one."""
    chain = sig.chain
    leaf = chain[0] if chain else None
    for cert in chain:
        for rule in by_tbs.get(cert.tbs_hash.lower(), ()):
            if _narrowing_matches(rule, leaf):
                yield rule
    if tbs_only:
        return
    for rule in rules:
        if rule.tbs is None and _narrowing_matches(rule, leaf):
            yield rule


def _narrowing_matches(rule: SignerRule, leaf: CertInfo | None) -> bool:
    if rule.publisher is not None and (leaf is None or rule.publisher not in common_names(leaf)):
        return False
    if rule.eku is not None:
        # CertInfo carries no EKUs yet; a rule that needs one only matches when it does.
        ekus = getattr(leaf, "ekus", None)
        if not ekus or rule.eku not in ekus:
            return False
    return True


def common_names(cert: CertInfo) -> list[str]:
    """CN values of an RFC 4514 subject string (escapes undone)."""
    names = []
    for part in _RDN_SPLIT.split(cert.subject):
        attr, sep, value = part.partition("=")
        if sep and attr.strip().upper() in {"CN", "2.5.4.3"}:
            names.append(_unescape(value.strip()))
    return names


def _unescape(value: str) -> str:
    """Undo RFC 4514 escapes: ``\\,`` and hex pairs (UTF-8 bytes, e.g. ``\\C3\\A9``)."""
    out = bytearray()
    position = 0
    for match in _ESCAPE.finditer(value):
        out += value[position : match.start()].encode()
        token = match.group(1)
        out += bytes.fromhex(token) if len(token) == 2 else token.encode()
        position = match.end()
    out += value[position:].encode()
    return out.decode("utf-8", errors="replace")


# --- 5: digest strength ------------------------------------------------------------------------


def _weak_digest(report: Report, policy: Policy) -> list[Finding]:
    minimum = policy.min_digest
    sigs = _all_signatures(report)
    if minimum is None or not sigs:
        return []
    judged = [sig for sig in sigs if sig.valid] or sigs
    rank = {name: number for number, name in enumerate(DIGEST_ORDER)}
    best = max(judged, key=lambda sig: rank.get(sig.digest_algorithm, -1))
    if rank.get(best.digest_algorithm, -1) >= rank[minimum]:
        return []
    return [
        Finding(
            _C.POLICY_WEAK_DIGEST,
            f"strongest signature digest is {best.digest_algorithm}; the policy minimum is "
            f"{minimum}",
            signature=best.index,
        )
    ]
