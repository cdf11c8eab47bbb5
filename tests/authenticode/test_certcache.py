"""The per-process certificate caches: what repeats is computed once, verdicts never change."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import pytest
from asn1crypto import cms, pem, x509

from codeintegrity.authenticode import certcache, chaincache
from codeintegrity.authenticode.signerinfo import find_certificate
from codeintegrity.authenticode.trust import TrustStore
from codeintegrity.findings import FindingCode
from codeintegrity.options import VerifyOptions
from codeintegrity.verify import verify_path

from .conftest import FIXTURES, PKI, signatures_of

SIGNED_2030 = datetime(2030, 6, 1, tzinfo=UTC)  # inside the test PKI's validity (2025-2045)
AFTER_EXPIRY = datetime(2046, 1, 1, tzinfo=UTC)


def _der(name: str) -> bytes:
    _, _, der = pem.unarmor((PKI / name).read_bytes())
    return der


def _cold() -> None:
    certcache.clear()
    chaincache.clear()


def test_byte_identical_certificates_are_one_parsed_object():
    _cold()
    first = x509.Certificate.load(_der("ca.pem"))
    assert certcache.intern(first) is first
    assert certcache.intern(x509.Certificate.load(_der("ca.pem"))) is first
    assert certcache.intern(x509.Certificate.load(_der("leaf.pem"))) is not first
    # Two parses of the same file hand the checks the same certificate objects.
    again = [c for s in signatures_of(FIXTURES / "t64_sha256.exe") for c in s.certificates]
    once = [c for s in signatures_of(FIXTURES / "t64_sha256.exe") for c in s.certificates]
    assert again and all(a is b for a, b in zip(again, once, strict=True))
    stats = certcache.stats()
    assert stats["certificates_hits"] >= len(once) + 1


@pytest.mark.parametrize(
    ("needle", "replacement"),
    [
        # the codeSigning EKU's OBJECT IDENTIFIER tag made an INTEGER
        (bytes.fromhex("06082b06010505070303"), bytes.fromhex("02082b06010505070303")),
        (b"250101000000Z", b"251301000000Z"),  # notBefore in month 13
    ],
    ids=["eku", "validity"],
)
def test_certificate_with_an_unparseable_field_is_never_shared(needle, replacement):
    der = _der("leaf.pem")
    assert der.count(needle) == 1
    broken = der.replace(needle, replacement)
    first = x509.Certificate.load(broken)
    second = x509.Certificate.load(broken)
    assert certcache.intern(first) is first
    assert certcache.intern(second) is second  # each file keeps (and reports on) its own copy


def test_name_key_is_asn1cryptos_comparison_form():
    cert = x509.Certificate.load(_der("leaf.pem"))
    assert certcache.name_key(cert.subject) == cert.subject.hashable
    assert certcache.name_key(cert.issuer) == cert.issuer.hashable


def test_signer_found_when_its_issuer_is_encoded_differently():
    cert = x509.Certificate.load(_der("leaf.pem"))
    # The certificate's issuer is UTF8String; the same name in PrintableString is equal under
    # RFC 5280 comparison but not byte for byte, so only the comparison form can match it.
    printable = x509.Name(
        name="",
        value=x509.RDNSequence(
            x509.RelativeDistinguishedName(
                x509.NameTypeAndValue(
                    {
                        "type": pair["type"].dotted,
                        "value": x509.DirectoryString(
                            name="printable_string", value=pair["value"].native
                        ),
                    }
                )
                for pair in rdn
            )
            for rdn in cert.issuer.chosen
        ),
    )
    assert printable.hashable == cert.issuer.hashable
    assert printable.dump() != cert.issuer.dump()

    def sid(name: x509.Name, serial: int) -> cms.SignerIdentifier:
        return cms.SignerIdentifier(
            name="issuer_and_serial_number",
            value=cms.IssuerAndSerialNumber({"issuer": name, "serial_number": serial}),
        )

    for _ in range(2):  # cold, then from the name cache
        assert find_certificate(sid(printable, cert.serial_number), (cert,)) is cert
        assert find_certificate(sid(cert.issuer, cert.serial_number), (cert,)) is cert
    other = x509.Name.build({"common_name": "Someone Else"})
    assert find_certificate(sid(other, cert.serial_number), (cert,)) is None
    assert find_certificate(sid(printable, cert.serial_number + 1), (cert,)) is None


FILES = [
    "t64_sha256.exe",
    "t64_sha256_ph_ts.exe",
    "t64_nested_sha1+sha256ph.exe",
    "bad_flip_sigblob.exe",
    "bad_flip_text.exe",
    "cat_member_t64_tampered.exe",
]


def test_reports_with_warm_caches_equal_cold_ones(pki_store: TrustStore):
    options = VerifyOptions(trust=pki_store, at=SIGNED_2030)
    cold = []
    for name in FILES:
        _cold()  # every file judged as the first one of its process
        cold.append(verify_path(FIXTURES / name, options).to_dict())
    before = certcache.stats()
    warm = [verify_path(FIXTURES / name, options).to_dict() for name in FILES]
    warm += [verify_path(FIXTURES / name, options).to_dict() for name in FILES]
    assert warm == cold + cold
    after = certcache.stats()
    assert after["certificates_hits"] > before["certificates_hits"]
    assert after["infos_hits"] > before["infos_hits"]
    assert after["keys_hits"] > before["keys_hits"]


def test_time_validity_is_judged_per_file_with_a_cached_chain(pki_store: TrustStore):
    _cold()
    path = FIXTURES / "t64_sha256.exe"  # no timestamp: judged at ``at``

    def codes(at: datetime) -> set[FindingCode]:
        report = verify_path(path, VerifyOptions(trust=pki_store, at=at))
        return {f.code for f in report.findings}

    assert FindingCode.CHAIN_EXPIRED not in codes(SIGNED_2030)
    assert FindingCode.CHAIN_EXPIRED in codes(AFTER_EXPIRY)
    assert FindingCode.CHAIN_EXPIRED not in codes(SIGNED_2030)
    assert FindingCode.CHAIN_NOT_YET_VALID in codes(datetime(2024, 1, 1, tzinfo=UTC))


def test_lru_stays_within_its_bound_under_threads():
    cache: certcache.LRU[int, int] = certcache.LRU(8)
    start = threading.Barrier(4)

    def work(offset: int) -> None:
        start.wait()
        for key in range(500):
            assert cache.get(key, lambda key=key: key * 2) == key * 2
            assert len(cache) <= 8

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(cache) == 8
    assert cache.peek(499) == 998 and cache.peek(0) is None  # the least recent went first


def test_threads_racing_on_a_missing_key_get_the_stored_value():
    cache: certcache.LRU[str, object] = certcache.LRU(8)
    start = threading.Barrier(8)
    got: list[object] = []

    def compute() -> object:
        time.sleep(0.01)  # widen the window so the threads overlap in compute()
        return object()

    def work() -> None:
        start.wait()
        got.append(cache.get("key", compute))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(got) == 8 and all(value is got[0] for value in got)
    assert cache.peek("key") is got[0]


def test_failures_are_not_cached():
    cache: certcache.LRU[str, int] = certcache.LRU(4)
    calls = []

    def failing() -> int:
        calls.append(1)
        raise ValueError("bad")

    for _ in range(2):
        with pytest.raises(ValueError):
            cache.get("k", failing)
    assert len(calls) == 2 and len(cache) == 0


def test_installed_name_hashable_answers_from_the_cache_with_the_same_value():
    certcache.install()
    prepared = x509.Name.build(
        {"common_name": "  Contoso   Code  SIGNING CA ", "country_name": "US"}
    )
    printable = x509.Name.build(
        {"common_name": "contoso code signing ca", "country_name": "US"}, use_printable=True
    )
    # The RFC 4518 comparison form, computed the way asn1crypto does it.
    original = x509.RDNSequence.hashable.fget
    assert prepared.hashable == original(prepared.chosen) == original(printable.chosen)
    assert prepared == printable
    assert printable.hashable == prepared.hashable
    before = certcache.stats()["names_hits"]
    for _ in range(3):
        assert printable.hashable == original(printable.chosen)
    assert certcache.stats()["names_hits"] >= before + 3
    other = x509.Name.build({"common_name": "Contoso Code Signing CA 2", "country_name": "US"})
    assert other != prepared and other.hashable != prepared.hashable


def _rdn(*pairs: tuple[str, str]) -> x509.RelativeDistinguishedName:
    return x509.RelativeDistinguishedName(
        [
            x509.NameTypeAndValue({"type": kind, "value": x509.DirectoryString("utf8_string", v)})
            for kind, v in pairs
        ]
    )


def _name(*rdns: x509.RelativeDistinguishedName) -> x509.Name:
    # Through DER, as names arrive in certificates (the cache is keyed by the encoding).
    return x509.Name.load(x509.Name(name="", value=x509.RDNSequence(list(rdns))).dump())


_NAMES = [
    _name(_rdn(("common_name", "Contoso CA")), _rdn(("country_name", "US"))),
    _name(_rdn(("common_name", "  contoso   ca ")), _rdn(("country_name", "us"))),
    _name(_rdn(("common_name", "Contoso CA"))),
    _name(_rdn(("country_name", "US")), _rdn(("common_name", "Contoso CA"))),
    # Multi-valued RDNs: attribute order inside one RDN does not matter, count does.
    _name(_rdn(("common_name", "Contoso CA"), ("organization_name", "Contoso"))),
    _name(_rdn(("organization_name", "contoso"), ("common_name", "CONTOSO CA"))),
    # A type repeated inside one RDN: asn1crypto keeps the last value and compares counts.
    _name(_rdn(("organizational_unit_name", "A"), ("organizational_unit_name", "B"))),
    _name(_rdn(("organizational_unit_name", "B"))),
    _name(_rdn(("organizational_unit_name", "C"), ("organizational_unit_name", "B"))),
    _name(),
]


def test_installed_name_equality_agrees_with_asn1crypto_on_every_pair():
    certcache.install()
    original = x509.RDNSequence.__eq__
    agreed = 0
    for left in _NAMES:
        for right in _NAMES:
            expected = original(left.chosen, right.chosen)
            assert (left == right) is expected, (left.native, right.native)
            assert (left != right) is (not expected)
            agreed += expected
    # Each name equals itself; so do the case/spacing pair and the reordered-attributes pair.
    assert agreed == len(_NAMES) + 2 * 2
    # Same comparison string, different attribute count: ``hashable`` alone would say equal.
    assert _NAMES[6].hashable == _NAMES[7].hashable and _NAMES[6] != _NAMES[7]
    assert certcache.stats()["name_keys_size"] >= len(_NAMES)
    assert (_NAMES[0] == "Contoso CA") is False


def test_installed_name_equality_with_an_unpreparable_name_answers_as_asn1crypto_does():
    certcache.install()
    bad = _name(_rdn(("common_name", "bad\ufffd")))  # RFC 4518 prohibits U+FFFD
    # asn1crypto answers from the RDN counts before preparing any string ...
    assert (bad == _NAMES[0]) is False
    # ... and raises when it has to prepare it; the cache neither hides that nor stores it.
    with pytest.raises(ValueError, match="replacement character"):
        _ = bad == _name(_rdn(("common_name", "bad\ufffd")))
