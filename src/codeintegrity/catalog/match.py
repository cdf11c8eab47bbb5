"""Which catalog vouches for a file: the catalogs of an index that list one of its digests,
each catalog's own signature judged, and a listed member's page hashes checked against the
file (a second, page-only hashing pass). Used by the engine (:mod:`codeintegrity.verify`)."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from ..findings import Finding, FindingCode, Severity
from ..report import CatalogMatch, Check, signature_result

if TYPE_CHECKING:
    from ..options import VerifyOptions
    from ..pe.layout import PEImage
    from ..pe.source import ByteSource

_C = FindingCode


class PageChecker:
    """Checks a catalog member's page hashes against this image (a second, page-only pass)."""

    def __init__(
        self,
        data: bytes | bytearray | memoryview,
        image: PEImage,
        opts: VerifyOptions,
        source: ByteSource | None = None,
    ):
        self.data, self.image, self.opts, self.source = data, image, opts, source

    def __call__(self, raw: bytes, algorithm: str) -> list[Finding]:
        from ..pe.hashing import HashRequest, hashes_of
        from ..pe.pagehash import compare_page_hashes, parse_page_hash_table

        table, problems = parse_page_hash_table(raw, algorithm, self.image, self.opts.limits, -1)
        if table is None:
            return [replace(p, signature=None) for p in problems]
        request = HashRequest(image=frozenset(), page_tables=(table,))
        computed = hashes_of(self.data, self.source, self.image, request, self.opts.limits).pages[0]
        found = problems + compare_page_hashes(table, computed, -1)
        return [replace(f, signature=None, detail=f"catalog member: {f.detail}") for f in found]


def catalog_lookup(
    digests: dict[str, bytes], opts: VerifyOptions, page_checker: PageChecker | None = None
) -> tuple[CatalogMatch | None, list[Finding]]:
    """Find a catalog listing one of ``digests`` whose own signature is valid."""
    index = opts.catalogs
    if index is None or not digests:
        return None, []
    members = index.lookup(digests)
    if not members:
        return None, []
    trust = opts.trust
    if trust is None:
        from ..authenticode.trust import TrustStore

        trust = TrustStore.default()
    findings: list[Finding] = []
    for member in members:
        verdict = index.verify_catalog(member.catalog_path, trust, opts.at)
        sig_errors = [f for f in verdict.findings if f.severity is Severity.ERROR]
        page_findings: list[Finding] = []
        page_check = Check.ABSENT
        if (
            member.page_hash_raw is not None
            and member.page_hash_algorithm is not None
            and page_checker is not None
        ):
            page_findings = page_checker(member.page_hash_raw, member.page_hash_algorithm)
            page_check = Check.INVALID if page_findings else Check.VALID
        valid = verdict.signature_valid and verdict.trusted and not sig_errors
        result = signature_result(
            verdict,
            index=-1,
            parent=None,
            entry=-1,
            digest_algorithm=member.digest_algorithm,
            image_hash=Check.VALID,
            page_hashes=page_check,
            page_hash_algorithm=member.page_hash_algorithm,
            signed_digest=member.digest,
            valid=valid and not page_findings,
        )
        match = CatalogMatch(
            path=member.catalog_path,
            member_tag=member.tag.hex() if isinstance(member.tag, bytes) else str(member.tag),
            digest_algorithm=member.digest_algorithm,
            signature=result,
        )
        if valid:
            info = Finding(
                _C.CATALOG_SIGNED,
                f"listed in {member.catalog_path} ({member.digest_algorithm}), "
                f"catalog signed by {result.signer}",
            )
            return match, [info, *page_findings]
        reasons = "; ".join(f.detail for f in verdict.findings) or "untrusted"
        findings.append(
            Finding(
                _C.CATALOG_SIGNATURE_INVALID,
                f"listed in {member.catalog_path}, but the catalog's signature is not valid: "
                f"{reasons}",
            )
        )
    # Every listing catalog failed: report it as a catalog-signed file with a bad catalog.
    return match, findings
