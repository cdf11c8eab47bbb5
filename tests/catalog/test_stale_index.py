"""A stale catalog index never vouches for a file: members must come from the verified bytes.

The attack (issue "stale catalog index"): index a forged catalog C at ``cats/vendor.cat`` (the
signed ``fixtures.cat`` with one member's digests replaced by those of a tampered file M, same
size), then put the genuine catalog back at the same path with the same mtime (``os.utime``).
An index that trusts (path, size, mtime) then lists M as a member of a validly signed catalog.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest

from codeintegrity.catalog import CatalogIndex
from tests.catalog.peutil import authentihash
from tests.conftest import FIXTURES, PKI

GOOD = FIXTURES / "cat_member_t64.exe"
TAMPERED = FIXTURES / "cat_member_t64_tampered.exe"
ANCHORS = ["--trust", str(PKI / "ca.pem"), "--trust", str(PKI / "tsaca.pem")]


def _forge(genuine: bytes) -> bytes:
    """``fixtures.cat`` with the member digest of GOOD replaced by TAMPERED's (same size)."""
    good = authentihash(GOOD.read_bytes(), "sha256")
    bad = authentihash(TAMPERED.read_bytes(), "sha256")
    assert genuine.count(good) == 2  # the v2 tag and the SPC_INDIRECT_DATA digest
    forged = genuine.replace(good, bad)
    assert len(forged) == len(genuine) and forged != genuine
    return forged


def _verify(*args: str, home) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "codeintegrity", "verify", "--no-cache", *args],
        capture_output=True,
        text=True,
        env=dict(os.environ, CODEINTEGRITY_HOME=str(home)),
        timeout=120,
        check=False,
    )


def test_the_reported_attack_through_the_cli(tmp_path):
    cats = tmp_path / "cats"
    cats.mkdir()
    target = cats / "vendor.cat"
    genuine = (FIXTURES / "fixtures.cat").read_bytes()
    forged = _forge(genuine)
    target.write_bytes(forged)
    os.utime(target, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))
    planted = target.stat()

    # 1. The forged catalog is indexed into the default cache (its signature is broken, so the
    #    tampered file is not catalog-signed by it).
    first = _verify(*ANCHORS, "--catalog", str(cats), str(TAMPERED), home=tmp_path)
    assert first.returncode == 1, first.stdout + first.stderr
    assert (tmp_path / "catalogs.sqlite3").exists()

    # 2. The genuine signed catalog is put back: same path, same size, same mtime.
    target.write_bytes(genuine)
    os.utime(target, ns=(planted.st_atime_ns, planted.st_mtime_ns))
    restored = target.stat()
    assert (restored.st_size, restored.st_mtime_ns) == (planted.st_size, planted.st_mtime_ns)

    # 3. The tampered file must not be valid; the genuine member still is.
    second = _verify(*ANCHORS, "--json", "--catalog", str(cats), str(TAMPERED), home=tmp_path)
    assert second.returncode == 1, second.stdout + second.stderr
    (report,) = [json.loads(line) for line in second.stdout.splitlines()]
    assert report["status"] == "unsigned" and report["catalog"] is None
    third = _verify(*ANCHORS, "--catalog", str(cats), str(GOOD), home=tmp_path)
    assert third.returncode == 0, third.stdout + third.stderr


def test_index_answers_from_the_current_bytes_and_keeps_the_fix(tmp_path):
    cats = tmp_path / "cats"
    cats.mkdir()
    target = cats / "vendor.cat"
    genuine = (FIXTURES / "fixtures.cat").read_bytes()
    target.write_bytes(_forge(genuine))
    planted = target.stat()
    cache = str(tmp_path / "cache.sqlite3")
    bad = authentihash(TAMPERED.read_bytes(), "sha256")
    good = authentihash(GOOD.read_bytes(), "sha256")
    with CatalogIndex.open([str(cats)], cache_path=cache) as index:
        (member,) = index.lookup({"sha256": bad})  # the forged list, from the forged bytes
        assert member.catalog_sha256 and member.name == "distlib_t64.exe"

    target.write_bytes(genuine)
    os.utime(target, ns=(planted.st_atime_ns, planted.st_mtime_ns))
    with CatalogIndex.open([str(cats)], cache_path=cache) as index:
        assert index.stats.parsed == 0  # the hint says "unchanged": start-up stays cheap ...
        assert index.lookup({"sha256": bad}, include_unsigned=True) == []  # ... lookup is not
        (member,) = index.lookup({"sha256": good})
        assert member.catalog_sha256 == hashlib.sha256(genuine).digest()
    with CatalogIndex.open([str(cats)], cache_path=cache) as index:
        # The re-index was persisted: the forged member list is gone from the cache too.
        assert index.lookup({"sha256": bad}, include_unsigned=True) == []


@pytest.fixture(scope="module")
def ca_only():
    from codeintegrity.authenticode.trust import TrustStore

    return TrustStore.from_paths([str(PKI / "ca.pem")])


def test_catalog_swapped_between_lookup_and_verification_does_not_vouch(tmp_path, ca_only):
    """Time of check, time of use: the member came from content X; the file now holds Y.

    Here the genuine catalog is looked up first (members from X), then replaced by another
    validly signed catalog (Y) that does not list the file: the verdict must not be Y's."""
    target = tmp_path / "vendor.cat"
    shutil.copy(FIXTURES / "fixtures.cat", target)
    good = authentihash(GOOD.read_bytes(), "sha256")
    with CatalogIndex.open([str(target)], cache_path=":memory:") as index:
        (member,) = index.lookup({"sha256": good})
        shutil.copy(FIXTURES / "ossl_testfiles_signed.cat", target)
        verdict = index.verify_catalog(str(target), ca_only, None)
        assert not verdict.signature_valid
        assert "changed since it was indexed" in verdict.findings[0].detail
        pinned = index.verify_catalog(
            str(target), ca_only, None, expected_sha256=member.catalog_sha256
        )
        assert not pinned.signature_valid


def test_lookup_reads_a_large_catalog_once_per_run(tmp_path, ca_only, monkeypatch):
    import codeintegrity.catalog.index as index_module

    target = tmp_path / "vendor.cat"
    shutil.copy(FIXTURES / "fixtures.cat", target)
    good = authentihash(GOOD.read_bytes(), "sha256")
    reads: list[str] = []
    real = index_module._read_catalog

    def counting(path, limits):
        reads.append(path)
        return real(path, limits)

    monkeypatch.setattr(index_module, "_read_catalog", counting)
    with CatalogIndex.open([str(target)], cache_path=":memory:") as index:
        for _ in range(5):
            (member,) = index.lookup({"sha256": good})
            verdict = index.verify_catalog(member.catalog_path, ca_only, None)
            assert verdict.signature_valid and verdict.trusted
    # One read to check the content, one to verify its signature; then both are remembered.
    assert reads == [str(target), str(target)]
