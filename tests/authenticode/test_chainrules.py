"""Chain rules Windows applies beyond RFC 5280, on osslsigncode-signed tests/data/chain files."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from asn1crypto import pem, x509

from codeintegrity.authenticode import chaincache, chainrules, dername
from codeintegrity.authenticode.signer import SignerVerdict, verify_signer
from codeintegrity.authenticode.trust import TrustStore, validate_chain
from codeintegrity.findings import EVENT_IMAGE_HASH, EVENT_PRIMITIVE_FAILED, FindingCode, Severity

from .conftest import DATA, signatures_of

CHAIN = DATA / "chain"
CERTS = CHAIN / "certs"
AT = datetime(2026, 6, 1, tzinfo=UTC)
C = FindingCode


@pytest.fixture(scope="module")
def chain_store() -> TrustStore:
    return TrustStore.from_paths([CHAIN / "anchors.pem"])


def _cert(name: str) -> x509.Certificate:
    _type, _headers, der = pem.unarmor((CERTS / f"{name}.pem").read_bytes())
    return x509.Certificate.load(der)


def _verdict(name: str, store: TrustStore, at: datetime = AT) -> SignerVerdict:
    (sig,) = signatures_of(CHAIN / name)
    return verify_signer(sig, store, at=at)


def _errors(verdict: SignerVerdict) -> list[FindingCode]:
    return [f.code for f in verdict.findings if f.severity is Severity.ERROR]


@pytest.mark.parametrize(
    "name",
    [
        "valid.exe",
        "rsa1024.exe",
        "sha1_cert.exe",  # user mode still accepts SHA-1 certificate signatures
        "ecdsa_p256.exe",
        "eku_none.exe",  # no EKU on leaf nor CA: valid for every usage
        "eku_issuer_codesign.exe",
        "nc_no_names.exe",  # UPN + email constraints no longer crash the validator
        "nc_good_names.exe",  # SAN email and UPN inside the permitted subtrees
        "ts2009_weak_rsa512.exe",  # KB2661254: timestamped before 2010
        "ts2009jan_md5_cert.exe",  # MD5 certificate, timestamped before March 2009
    ],
)
def test_accepted_where_windows_accepts(name: str, chain_store: TrustStore) -> None:
    verdict = _verdict(name, chain_store)
    assert verdict.signature_valid and verdict.trusted, verdict.findings
    assert _errors(verdict) == []


@pytest.mark.parametrize(
    ("name", "code", "culprit"),
    [
        ("eku_issuer_serverauth.exe", C.CHAIN_EKU_NOT_ALLOWED_BY_ISSUER, "CA serverAuth only"),
        ("weak_rsa512.exe", C.CHAIN_WEAK_KEY, "Publisher 512-bit"),
        ("md5_cert.exe", C.CHAIN_WEAK_SIGNATURE_HASH, "Publisher MD5-signed"),
        ("ts2009_md5_cert.exe", C.CHAIN_WEAK_SIGNATURE_HASH, "Old Publisher MD5-signed"),
        ("ecdsa_secp256k1.exe", C.CHAIN_UNSUPPORTED_KEY, "Publisher secp256k1"),
        ("issuer_not_ca.exe", C.CHAIN_ISSUER_NOT_CA, "CA:FALSE issuer"),
        ("pathlen_exceeded.exe", C.CHAIN_PATH_LENGTH, "Root pathlen 0"),
        ("critical_unknown.exe", C.CHAIN_CRITICAL_EXTENSION, "unknown critical"),
        ("nc_bad_email.exe", C.CHAIN_NAME_CONSTRAINTS, "signer@evil.test"),
        ("nc_bad_upn.exe", C.CHAIN_NAME_CONSTRAINTS, "UPN:signer@evil.test"),
        ("not_yet_valid.exe", C.CHAIN_NOT_YET_VALID, "not valid until 2030"),
    ],
)
def test_rejected_where_windows_rejects(
    name: str, code: FindingCode, culprit: str, chain_store: TrustStore
) -> None:
    verdict = _verdict(name, chain_store)
    assert verdict.signature_valid and not verdict.trusted
    assert _errors(verdict) == [code]
    (finding,) = verdict.findings
    assert culprit in finding.detail  # the report names the certificate (or name) at fault
    assert finding.event_id == EVENT_IMAGE_HASH


def test_timestamp_chain_eku_is_intersected(chain_store: TrustStore) -> None:
    # The TSA certificate has timeStamping, but its CA allows only serverAuth: the timestamp is
    # not trusted (a warning) and the chain is judged at the caller's time instead.
    verdict = _verdict("ts_tsa_eku_restricted.exe", chain_store)
    assert verdict.trusted and verdict.timestamp is None
    (warning,) = verdict.findings
    assert warning.code is C.TIMESTAMP_UNTRUSTED
    assert "Chain Test CA serverAuth only" in warning.detail


def test_intermediate_without_eku_does_not_restrict(chain_store: TrustStore) -> None:
    ica, leaf = _cert("ica"), _cert("leaf")
    assert ica.extended_key_usage_value is None
    assert validate_chain(leaf, [ica], chain_store, AT).ok
    # the same leaf under a restricting CA fails for code signing but not for serverAuth
    leaf_sa, ica_sa = _cert("leaf_sa"), _cert("ica_sa")
    assert not validate_chain(leaf_sa, [ica_sa], chain_store, AT).ok
    no_eku = _cert("leaf_noeku")
    assert validate_chain(no_eku, [ica], chain_store, AT, "1.3.6.1.5.5.7.3.8").ok


def test_exemptions_follow_the_timestamp(chain_store: TrustStore) -> None:
    leaf, ica = _cert("oldleaf_512"), _cert("oldica")
    moment = datetime(2009, 6, 1, tzinfo=UTC)
    plain = validate_chain(leaf, [ica], chain_store, moment)
    assert plain.code is C.CHAIN_WEAK_KEY  # no timestamp: no exemption
    stamped = validate_chain(leaf, [ica], chain_store, moment, timestamped=moment)
    assert stamped.ok
    late = datetime(2010, 1, 1, tzinfo=UTC)
    assert not validate_chain(leaf, [ica], chain_store, late, timestamped=late).ok


def test_any_extended_key_usage_on_an_issuer_allows_everything() -> None:
    facts = chainrules.ChainFacts((), ((1, "CA", frozenset({chainrules.ANY_EKU})),))
    assert chainrules.applicable(facts, "1.3.6.1.5.5.7.3.3", None) == []
    facts = chainrules.ChainFacts((), ((1, "CA", frozenset({"1.3.6.1.5.5.7.3.1"})),))
    (violation,) = chainrules.applicable(facts, "1.3.6.1.5.5.7.3.3", None)
    assert violation.code is C.CHAIN_EKU_NOT_ALLOWED_BY_ISSUER and violation.position == 1


def test_every_new_code_raises_5038_and_validator_failures_5057() -> None:
    codes = [
        C.CHAIN_NOT_YET_VALID,
        C.CHAIN_EKU_NOT_ALLOWED_BY_ISSUER,
        C.CHAIN_WEAK_KEY,
        C.CHAIN_UNSUPPORTED_KEY,
        C.CHAIN_WEAK_SIGNATURE_HASH,
        C.CHAIN_ISSUER_NOT_CA,
        C.CHAIN_PATH_LENGTH,
        C.CHAIN_CRITICAL_EXTENSION,
        C.CHAIN_NAME_CONSTRAINTS,
    ]
    from codeintegrity.findings import RULES

    assert {RULES[c].event_id for c in codes} == {EVENT_IMAGE_HASH}
    assert RULES[C.CHAIN_VALIDATOR_FAILED].event_id == EVENT_PRIMITIVE_FAILED


def test_validator_exception_is_its_own_finding(
    chain_store: TrustStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pyhanko_certvalidator import CertificateValidator

    async def explode(self: object) -> None:
        raise TypeError("unhashable type: 'collections.OrderedDict'")

    chaincache.clear()
    monkeypatch.setattr(CertificateValidator, "async_validate_path", explode)
    try:
        result = validate_chain(_cert("leaf"), [_cert("ica")], chain_store, AT)
    finally:
        chaincache.clear()
    assert not result.ok
    assert result.code is C.CHAIN_VALIDATOR_FAILED
    assert "TypeError" in result.detail and "OrderedDict" in result.detail
    assert C.CHAIN_UNTRUSTED not in {code for code, _ in result.problems}


INTEL = [CHAIN / "intel" / "libiompstubs5md.dll", CHAIN / "intel" / "tbbmalloc_proxy.dll"]


@pytest.mark.parametrize("path", INTEL, ids=lambda p: Path(p).name)
def test_intel_dlls_with_upn_constraints_are_valid(path: Path, default_store: TrustStore) -> None:
    from codeintegrity.options import VerifyOptions
    from codeintegrity.report import Status
    from codeintegrity.verify import verify_path

    report = verify_path(path, VerifyOptions())
    assert report.status is Status.VALID, [f.to_dict() for f in report.findings]
    (sig,) = signatures_of(path)
    verdict = verify_signer(sig, default_store)
    names = [info.subject for info in verdict.chain]
    assert any("Intel External Issuing CA 7B" in n for n in names)  # the constrained CA


def test_untrusted_chain_builds_no_registry_of_all_anchors() -> None:
    # A Debian-signed EFI binary under Microsoft's roots: no anchor names any issuer, so the
    # verdict comes without building a pyhanko trust registry over the 555 anchors.
    efi = DATA / "samples" / "signed"
    path = next(efi.rglob("fbx64.efi.signed"), None) or next(efi.rglob("*.efi.signed"))
    store = TrustStore(TrustStore.default()._ders.values(), name="fresh")
    (sig, *_rest) = signatures_of(path)
    verdict = verify_signer(sig, store)
    assert _errors(verdict) == [C.CHAIN_UNTRUSTED]
    assert store._managers == {}


def test_loose_name_key_ignores_string_type_and_case() -> None:
    from asn1crypto.x509 import Name

    printable = Name.build({"common_name": "Example Root"}).dump()
    utf8 = Name.build({"common_name": "example  ROOT"}, use_printable=False).dump()
    assert printable != utf8
    assert dername.loose_name_key(printable) == dername.loose_name_key(utf8)
    assert dername.loose_name_key(b"\x04\x00") is None


def test_catalog_signer_chain_is_eku_intersected(chain_store: TrustStore) -> None:
    from codeintegrity.catalog import CatalogIndex

    with CatalogIndex.open([str(CHAIN)], cache_path=":memory:") as index:
        good = index.verify_catalog(str(CHAIN / "catalog_valid.cat"), chain_store, AT)
        bad = index.verify_catalog(
            str(CHAIN / "catalog_eku_issuer_serverauth.cat"), chain_store, AT
        )
    assert good.signature_valid and good.trusted, good.findings
    assert bad.signature_valid and not bad.trusted
    assert _errors(bad) == [C.CHAIN_EKU_NOT_ALLOWED_BY_ISSUER]


def test_engine_reports_rule_and_validator_failures_with_their_events(
    chain_store: TrustStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pyhanko_certvalidator import CertificateValidator

    from codeintegrity.options import VerifyOptions
    from codeintegrity.report import Status
    from codeintegrity.verify import verify_path

    options = VerifyOptions(trust=chain_store, at=AT)
    report = verify_path(CHAIN / "eku_issuer_serverauth.exe", options)
    assert report.status is Status.INVALID and report.event_ids == [EVENT_IMAGE_HASH]
    (finding,) = report.to_dict()["findings"]
    assert finding["code"] == "chain.eku-not-allowed-by-issuer"
    assert "Chain Test CA serverAuth only" in finding["detail"]

    async def explode(self: object) -> None:
        raise RuntimeError("validator bug")

    chaincache.clear()
    monkeypatch.setattr(CertificateValidator, "async_validate_path", explode)
    try:
        crashed = verify_path(CHAIN / "valid.exe", options)
    finally:
        chaincache.clear()
    assert crashed.status is Status.INVALID
    assert crashed.event_ids == [EVENT_PRIMITIVE_FAILED]
    assert [f.code for f in crashed.findings] == [C.CHAIN_VALIDATOR_FAILED]
