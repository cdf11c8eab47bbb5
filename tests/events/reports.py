"""Report values for event tests, shaped like what the engine produces (see test_end_to_end)."""

from __future__ import annotations

from datetime import UTC, datetime

from codeintegrity.events.build import Host
from codeintegrity.findings import Finding, FindingCode
from codeintegrity.report import (
    CertInfo,
    Check,
    Decision,
    ImageInfo,
    Report,
    SignatureResult,
    Status,
)

LEAF = CertInfo(
    subject="O=corpus-fixtures,CN=Throwaway Test Publisher",
    issuer="O=corpus-fixtures,CN=Throwaway Test Code Signing Root CA",
    serial="02",
    sha1="d16d25f13d535d65d54eb1ad1cbef0d04cfbe504",
    tbs_hash="72bcf2bf00a28f5e57bc18de29a74adcef6facded421b1da5e8c8e9e394fed02",
    not_before=datetime(2025, 1, 1, tzinfo=UTC),
    not_after=datetime(2045, 1, 1, tzinfo=UTC),
)
ROOT = CertInfo(
    subject="O=corpus-fixtures,CN=Throwaway Test Code Signing Root CA",
    issuer="O=corpus-fixtures,CN=Throwaway Test Code Signing Root CA",
    serial="01",
    sha1="5e2d0945f04d35aa26781e523544a668adf2e09a",
    tbs_hash="1599fd5b1b1a8847b65632930e06e8b676a89a403da6272de865794ebe30e205",
    not_before=datetime(2025, 1, 1, tzinfo=UTC),
    not_after=datetime(2045, 1, 1, tzinfo=UTC),
)
AUTHENTIHASH = {
    "sha1": "4b3f1e0c5d8a2f6e9b7c1d0a3e5f7b9c2d4e6f80",
    "sha256": "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90",
}
FLAT = {
    "sha1": "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c",
    "sha256": "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100",
}
HOST = Host(computer="TESTHOST", process_id=4242, process_name="codeintegrity", user_name="alice")


def signature(*, valid: bool, image: Check, pages: Check, index: int = 0) -> SignatureResult:
    return SignatureResult(
        index=index,
        parent=None if index == 0 else 0,
        entry=0,
        digest_algorithm="sha256",
        image_hash=image,
        page_hashes=pages,
        page_hash_algorithm="sha256" if pages is not Check.ABSENT else None,
        signature_valid=True,
        trusted=True,
        signer=LEAF.subject,
        issuer=LEAF.issuer,
        timestamp=None,
        timestamp_kind=None,
        chain=(LEAF, ROOT),
        signed_digest=bytes(32),
        valid=valid,
    )


def image(*, driver: bool = False) -> ImageInfo:
    return ImageInfo(
        machine=0x8664,
        pe32_plus=True,
        subsystem=1 if driver else 3,
        characteristics=0x22,
        dll_characteristics=0x8160,
        is_kernel_driver=driver,
        is_efi=False,
        force_integrity=False,
        sections=5,
        size=100_000,
    )


def valid_report(path: str = "/data/ok.exe") -> Report:
    return Report(
        path=path,
        status=Status.VALID,
        signatures=(signature(valid=True, image=Check.VALID, pages=Check.VALID),),
        image=image(),
        authentihash=AUTHENTIHASH,
        flat_hash=FLAT,
    )


def tampered_report(path: str = "/data/bad_flip_text.exe", bad_pages: int = 3) -> Report:
    """Image hash and three page hashes wrong: raises 5038 and one 6281."""
    findings = [Finding(FindingCode.IMAGE_HASH_MISMATCH, "image hash differs", signature=0)]
    findings += [
        Finding(FindingCode.PAGE_HASH_MISMATCH, f"page {n} differs", signature=0, page=n)
        for n in range(bad_pages)
    ]
    return Report(
        path=path,
        status=Status.INVALID,
        findings=tuple(findings),
        signatures=(signature(valid=False, image=Check.INVALID, pages=Check.INVALID),),
        image=image(),
        authentihash=AUTHENTIHASH,
        flat_hash=FLAT,
    )


def shared_writable_report(path: str = "/data/shared.exe") -> Report:
    return Report(
        path=path,
        status=Status.INVALID,
        findings=(
            Finding(FindingCode.SHARED_WRITABLE_SECTION, ".shr is shared+writable", section=".shr"),
        ),
        signatures=(signature(valid=True, image=Check.VALID, pages=Check.ABSENT),),
        image=image(),
        authentihash=AUTHENTIHASH,
        flat_hash=FLAT,
    )


def unsigned_driver_report(path: str = "/data/drv.sys") -> Report:
    return Report(
        path=path,
        status=Status.UNSIGNED,
        findings=(Finding(FindingCode.UNSIGNED_DRIVER, "driver is not signed"),),
        image=image(driver=True),
        authentihash=AUTHENTIHASH,
        flat_hash=FLAT,
    )


# SHA-256 of a policy file (PolicyHash in 3076/3077).
POLICY_SHA256 = "d712ae63" + "5a" * 28


def denied_report(mode: str, path: str = "/data/asrdrv10.sys") -> Report:
    reason = Finding(FindingCode.POLICY_DENIED_HASH, "SHA256 authentihash is denied")
    return Report(
        path=path,
        status=Status.VALID,
        signatures=(signature(valid=True, image=Check.VALID, pages=Check.ABSENT),),
        image=image(driver=True),
        authentihash=AUTHENTIHASH,
        flat_hash=FLAT,
        decision=Decision(
            allowed=False,
            mode=mode,
            policy_name="Microsoft Windows Driver Policy - Enforced",
            policy_id="{aa120602-611b-4455-b8d8-c13a815b4323}",
            reasons=(reason,),
            policy_guid="{aa120602-611b-4455-b8d8-c13a815b4323}",
            policy_hash=POLICY_SHA256,
        ),
    )


def revoked_report(path: str = "/data/revoked.sys", *, driver: bool = True) -> Report:
    """Signed by a revoked certificate: CodeIntegrity 3023 (driver) / 3036 (user mode)."""
    return Report(
        path=path,
        status=Status.INVALID,
        findings=(Finding(FindingCode.CHAIN_REVOKED, "certificate is revoked", signature=0),),
        signatures=(signature(valid=False, image=Check.VALID, pages=Check.VALID),),
        image=image(driver=driver),
        authentihash=AUTHENTIHASH,
        flat_hash=FLAT,
    )
