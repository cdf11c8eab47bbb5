"""Build Report values for policy tests (the evaluator is pure: reports in, decisions out)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from codeintegrity.findings import Finding
from codeintegrity.report import (
    CatalogMatch,
    CertInfo,
    Check,
    ImageInfo,
    Report,
    SignatureResult,
    Status,
)

T0 = datetime(2020, 1, 1, tzinfo=UTC)
T1 = datetime(2040, 1, 1, tzinfo=UTC)


def cert(subject: str, issuer: str, tbs: str, sha1: str = "00" * 20) -> CertInfo:
    return CertInfo(subject, issuer, "01", sha1, tbs, T0, T1)


ROOT = cert("CN=Test Root,O=T", "CN=Test Root,O=T", "aa" * 32, "a1" * 20)
CA = cert("CN=Test CA,O=T", "CN=Test Root,O=T", "bb" * 32, "b1" * 20)
LEAF = cert("CN=Contoso\\, Ltd.,O=Contoso,C=US", "CN=Test CA,O=T", "cc" * 32, "c1" * 20)
CHAIN = (LEAF, CA, ROOT)


def signature(
    index: int = 0,
    *,
    digest: str = "sha256",
    chain: tuple[CertInfo, ...] = CHAIN,
    valid: bool = True,
    page_hashes: Check = Check.VALID,
) -> SignatureResult:
    return SignatureResult(
        index=index,
        parent=None if index == 0 else 0,
        entry=0,
        digest_algorithm=digest,
        image_hash=Check.VALID if valid else Check.INVALID,
        page_hashes=page_hashes,
        page_hash_algorithm="sha256" if page_hashes is Check.VALID else None,
        signature_valid=valid,
        trusted=valid,
        signer=chain[0].subject if chain else None,
        issuer=chain[0].issuer if chain else None,
        timestamp=None,
        timestamp_kind=None,
        chain=chain,
        valid=valid,
    )


def image(kernel: bool) -> ImageInfo:
    return ImageInfo(
        machine=0x8664,
        pe32_plus=True,
        subsystem=1 if kernel else 3,
        characteristics=0x22,
        dll_characteristics=0,
        is_kernel_driver=kernel,
        is_efi=False,
        force_integrity=False,
        sections=5,
        size=4096,
    )


def report(
    *,
    status: Status = Status.VALID,
    kernel: bool | None = True,
    signatures: tuple[SignatureResult, ...] = (),
    findings: tuple[Finding, ...] = (),
    authentihash: Mapping[str, str] | None = None,
    unpadded: Mapping[str, str] | None = None,
    flat: Mapping[str, str] | None = None,
    first_page: Mapping[str, str] | None = None,
    catalog: CatalogMatch | None = None,
) -> Report:
    if status is Status.VALID and not signatures and catalog is None:
        signatures = (signature(),)
    return Report(
        path="x.sys",
        status=status,
        findings=findings,
        signatures=signatures,
        image=None if kernel is None else image(kernel),
        authentihash=dict(authentihash or {"sha256": "11" * 32}),
        authentihash_unpadded=dict(unpadded or authentihash or {"sha256": "11" * 32}),
        first_page_hash=dict(first_page or {}),
        flat_hash=dict(flat or {}),
        catalog=catalog,
    )
