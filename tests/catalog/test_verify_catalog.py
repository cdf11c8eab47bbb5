"""A catalog's own signature is verified like an embedded one; the engine uses the index."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from codeintegrity.catalog import CatalogIndex
from codeintegrity.findings import FindingCode
from tests.conftest import FIXTURES, PKI, SIGNIFY

pytest.importorskip("codeintegrity.authenticode.signer")

MS_CAT = SIGNIFY / "115fe8649854ad531fb7ecd1318fbee6b33c9cbd78f02ed582092a96d5eb5899.cat"


@pytest.fixture(scope="module")
def ca_only():
    from codeintegrity.authenticode.trust import TrustStore

    return TrustStore.from_paths([str(PKI / "ca.pem")])


@pytest.fixture(scope="module")
def microsoft():
    from codeintegrity.authenticode.trust import TrustStore

    return TrustStore.default()


@pytest.fixture
def index(tmp_path):
    with CatalogIndex.open([str(FIXTURES), str(SIGNIFY)], cache_path=":memory:") as opened:
        yield opened


def test_corpus_catalog_verifies_with_the_test_ca(index, ca_only):
    verdict = index.verify_catalog(str(FIXTURES / "fixtures.cat"), ca_only, None)
    assert verdict.signature_valid and verdict.trusted and not verdict.findings
    assert verdict.signer.subject == "O=corpus-fixtures,CN=Throwaway Test Publisher"
    assert verdict.chain[-1].subject.endswith("CN=Throwaway Test Code Signing Root CA")


def test_corpus_catalog_is_untrusted_under_microsoft_roots(index, microsoft):
    verdict = index.verify_catalog(str(FIXTURES / "fixtures.cat"), microsoft, None)
    assert verdict.signature_valid and not verdict.trusted
    assert FindingCode.CHAIN_UNTRUSTED in {f.code for f in verdict.findings}


def test_oem89_chains_to_the_microsoft_root_bundle(index, microsoft):
    verdict = index.verify_catalog(str(SIGNIFY / "oem89.cat"), microsoft, None)
    assert verdict.signature_valid and verdict.trusted, verdict.findings
    assert "Microsoft Windows Hardware Compatibility Publisher" in verdict.signer.subject
    assert verdict.timestamp is not None


def test_microsoft_catalog_verifies(index, microsoft):
    verdict = index.verify_catalog(str(MS_CAT), microsoft, None)
    assert verdict.signature_valid and verdict.trusted, verdict.findings
    assert "CN=Microsoft Windows" in verdict.signer.subject


@pytest.mark.parametrize("name", ["unsigned_fixtures.cat", "catfiletest.cat"])
def test_unsigned_catalog_cannot_vouch(index, ca_only, name):
    path = FIXTURES / name if (FIXTURES / name).exists() else SIGNIFY / name
    verdict = index.verify_catalog(str(path), ca_only, None)
    assert not verdict.signature_valid and not verdict.trusted
    assert [f.code for f in verdict.findings] == [FindingCode.CATALOG_SIGNATURE_INVALID]
    assert "no signer" in verdict.findings[0].detail


def test_verdicts_are_cached_per_file_version_and_trust(tmp_path, ca_only, microsoft):
    path = tmp_path / "c.cat"
    shutil.copy(FIXTURES / "fixtures.cat", path)
    with CatalogIndex.open([str(path)], cache_path=":memory:") as index:
        first = index.verify_catalog(str(path), ca_only, None)
        assert index.verify_catalog(str(path), ca_only, None) is first
        assert index.verify_catalog(str(path), microsoft, None) is not first
        # The file changes (here: its signature is broken): it is verified again.
        data = bytearray(path.read_bytes())
        data[-40] ^= 0xFF
        path.write_bytes(bytes(data))
        stat = path.stat()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
        again = index.verify_catalog(str(path), ca_only, None)
        assert again is not first and not again.signature_valid


def test_missing_catalog_gives_a_failed_verdict(index, ca_only, tmp_path):
    verdict = index.verify_catalog(str(tmp_path / "gone.cat"), ca_only, None)
    assert not verdict.signature_valid and "cannot read catalog" in verdict.findings[0].detail


# -- through the engine ---------------------------------------------------------------------


def _engine():
    verify = pytest.importorskip("codeintegrity.verify")
    pytest.importorskip("codeintegrity.pe.hashing")
    return verify


def test_engine_dxcore_valid_embedded_and_through_its_catalog(microsoft):
    verify = _engine()
    from codeintegrity.report import Check, Status

    with CatalogIndex.open([str(MS_CAT)], cache_path=":memory:") as index:
        options = verify.VerifyOptions(trust=microsoft, catalogs=index)
        report = verify.verify_path(str(SIGNIFY / "DXCore.dll"), options)
    assert report.status is Status.VALID, [f.detail for f in report.findings]
    assert report.catalog is not None and report.catalog.path.endswith(MS_CAT.name)
    assert report.catalog.signature.valid and report.catalog.digest_algorithm == "sha256"
    # The SHA-256 page hashes of DXCore live in its embedded signature; they verify.
    assert report.signatures[0].page_hashes is Check.VALID
    assert report.signatures[0].page_hash_algorithm == "sha256"


def test_engine_catalog_signed_unsigned_file(ca_only):
    verify = _engine()
    from codeintegrity.report import Status

    with CatalogIndex.open([str(FIXTURES)], cache_path=":memory:") as index:
        options = verify.VerifyOptions(trust=ca_only, catalogs=index)
        good = verify.verify_path(str(FIXTURES / "cat_member_t64.exe"), options)
        bad = verify.verify_path(str(FIXTURES / "cat_member_t64_tampered.exe"), options)
    assert good.status is Status.VALID, [f.detail for f in good.findings]
    assert good.catalog is not None and good.catalog.path.endswith("fixtures.cat")
    assert good.catalog.signature.signer == "O=corpus-fixtures,CN=Throwaway Test Publisher"
    assert FindingCode.CATALOG_SIGNED in {f.code for f in good.findings}
    assert bad.status is Status.UNSIGNED and bad.catalog is None


def test_engine_unsigned_catalog_leaves_a_file_unsigned(ca_only):
    verify = _engine()
    from codeintegrity.report import Status

    path = str(FIXTURES / "unsigned_fixtures.cat")
    with CatalogIndex.open([path], cache_path=":memory:") as index:
        options = verify.VerifyOptions(trust=ca_only, catalogs=index)
        report = verify.verify_path(str(FIXTURES / "cat_member_t64.exe"), options)
    assert report.status is Status.UNSIGNED and report.catalog is None


# -- a catalog member with page hashes (built here, signed by osslsigncode) ----------------


def _osslsigncode_page_table(pe_path, tmp_path) -> tuple[bytes, bytes]:
    """(Authentihash, SHA-256 page-hash table) as osslsigncode computes them for ``pe_path``."""
    from asn1crypto import cms

    from codeintegrity.authenticode.asn1 import (
        PageHashAttributes,
        SpcIndirectDataContent,
        SpcPeImageData,
    )
    from codeintegrity.authenticode.signeddata import econtent_tlv

    out = tmp_path / "indirect.der"
    subprocess.run(
        ["osslsigncode", "extract-data", "-h", "sha256", "-ph", "-in", str(pe_path),
         "-out", str(out)],
        check=True, capture_output=True,
    )  # fmt: skip
    signed = cms.ContentInfo.load(out.read_bytes())["content"]
    indirect = SpcIndirectDataContent.load(econtent_tlv(signed["encap_content_info"]["content"]))
    pe_data = SpcPeImageData.load(indirect["data"]["value"].dump())
    serialized = pe_data["file"].chosen["serialized_data"].native
    (table,) = PageHashAttributes.load(serialized)[0]["values"].native
    return indirect["message_digest"]["digest"].native, table


def _signed_catalog(entries, tmp_path, name) -> str:
    from tests.catalog.catbuild import build_catalog

    unsigned = tmp_path / f"{name}.unsigned"
    unsigned.write_bytes(build_catalog(entries))
    target = tmp_path / f"{name}.cat"
    subprocess.run(
        ["osslsigncode", "sign", "-certs", str(PKI / "leaf.pem"), "-key", str(PKI / "leaf.key"),
         "-h", "sha256", "-in", str(unsigned), "-out", str(target)],
        check=True, capture_output=True,
    )  # fmt: skip
    return str(target)


@pytest.mark.skipif(shutil.which("osslsigncode") is None, reason="needs osslsigncode (apt)")
def test_engine_checks_page_hashes_of_the_catalog_member(ca_only, tmp_path):
    verify = _engine()
    from codeintegrity.report import Check, Status
    from tests.catalog.catbuild import Entry

    member = FIXTURES / "cat_member_t64.exe"
    digest, table = _osslsigncode_page_table(member, tmp_path)
    assert len(table) % 36 == 0 and table[-32:] == bytes(32)
    broken = bytearray(table)
    broken[4 + 36] ^= 0x01  # the digest of the second page
    good_cat = _signed_catalog([Entry(digest, member.name, table)], tmp_path, "good")
    bad_cat = _signed_catalog([Entry(digest, member.name, bytes(broken))], tmp_path, "bad")

    with CatalogIndex.open([good_cat], cache_path=":memory:") as index:
        (listed,) = index.lookup({"sha256": digest})
        assert listed.page_hash_raw == table and listed.page_hash_algorithm == "sha256"
        report = verify.verify_path(
            str(member), verify.VerifyOptions(trust=ca_only, catalogs=index)
        )
    assert report.status is Status.VALID, [f.detail for f in report.findings]
    assert report.catalog.signature.page_hashes is Check.VALID

    with CatalogIndex.open([bad_cat], cache_path=":memory:") as index:
        report = verify.verify_path(
            str(member), verify.VerifyOptions(trust=ca_only, catalogs=index)
        )
    assert report.catalog is not None and report.catalog.signature.page_hashes is Check.INVALID
    assert FindingCode.PAGE_HASH_MISMATCH in {f.code for f in report.findings}
    assert 6281 in report.event_ids
