"""CatalogIndex: discovery, lookup by indirect-data digest, persistence and re-indexing."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3

import pytest

import codeintegrity.catalog.index as index_module
from codeintegrity.catalog import CatalogIndex
from codeintegrity.catalog.store import default_cache_path
from tests.catalog.catbuild import Entry, build_catalog, fake_digest
from tests.catalog.peutil import authentihash
from tests.conftest import DATA, FIXTURES, SIGNIFY

MS_CAT_NAME = "115fe8649854ad531fb7ecd1318fbee6b33c9cbd78f02ed582092a96d5eb5899.cat"
CATALOGS = [
    SIGNIFY / MS_CAT_NAME,
    SIGNIFY / "oem89.cat",
    SIGNIFY / "catfiletest.cat",
    FIXTURES / "fixtures.cat",
    FIXTURES / "unsigned_fixtures.cat",
    FIXTURES / "ossl_testfiles_signed.cat",
    DATA / "thirdparty" / "osslsigncode" / "unsigned.cat",
]


@pytest.fixture
def catroot(tmp_path):
    """A CatRoot-like tree: catalogs in {GUID} folders, one broken catalog, one non-catalog."""
    root = tmp_path / "CatRoot"
    for i, path in enumerate(CATALOGS):
        folder = root / ("{F750E6C3-38EE-11D1-85E5-00C04FC295EE}" if i % 2 else "{127D0A1D}")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / f"{i}_{path.name}")
    (root / "{127D0A1D}" / "broken.CAT").write_bytes(b"\x30\x82\x01\x00garbage")
    (root / "{127D0A1D}" / "notes.txt").write_text("not a catalog")
    return root


@pytest.fixture
def index(catroot, tmp_path):
    with CatalogIndex.open([str(catroot)], cache_path=str(tmp_path / "cache.sqlite3")) as opened:
        yield opened


def test_counts_algorithms_and_warning_for_the_broken_catalog(index, catroot):
    assert index.catalog_count == len(CATALOGS)
    assert index.member_count == 20 + 1 + 1 + 2 + 2 + 14 + 14
    assert index.algorithms() == {"sha1", "sha256"}
    (warning,) = index.warnings
    assert warning.startswith(str(catroot / "{127D0A1D}" / "broken.CAT") + ": catalog skipped")
    assert "overruns" in warning and "\n" not in warning
    assert not any(p.endswith("notes.txt") for p in index.catalog_paths)


def test_dxcore_is_found_by_its_sha256_authentihash(index):
    digest = authentihash((SIGNIFY / "DXCore.dll").read_bytes(), "sha256")
    (member,) = index.lookup({"sha256": digest, "sha1": b"\0" * 20})
    assert member.catalog_path.endswith(MS_CAT_NAME)
    assert member.digest == digest and member.digest_algorithm == "sha256"
    assert member.catalog_signed and member.catalog_version == 2
    assert member.attributes["Hint"].endswith("\\dxcore.dll")


def test_gdi32_member_keeps_its_page_hash_table(index):
    catalog = index_module.parse_catalog((SIGNIFY / MS_CAT_NAME).read_bytes())
    gdi32 = next(m for m in catalog.members if m.page_hash_raw)
    (member,) = index.lookup({"sha256": gdi32.digest})
    assert member.page_hash_raw == gdi32.page_hash_raw
    assert member.page_hash_algorithm == "sha256"


def test_tag_is_not_matched(index):
    """DXCore's SHA-1 Authentihash is only a bare tag in the Microsoft catalog: no match."""
    sha1 = authentihash((SIGNIFY / "DXCore.dll").read_bytes(), "sha1")
    assert index.lookup({"sha1": sha1}, include_unsigned=True) == []


def test_corpus_catalog_matches_member_not_tampered(index):
    good = authentihash((FIXTURES / "cat_member_t64.exe").read_bytes(), "sha256")
    bad = authentihash((FIXTURES / "cat_member_t64_tampered.exe").read_bytes(), "sha256")
    (member,) = index.lookup({"sha256": good})
    assert member.catalog_path.endswith("fixtures.cat") and member.catalog_signed
    assert member.name == "distlib_t64.exe"
    assert index.lookup({"sha256": bad}, include_unsigned=True) == []


def test_unsigned_catalogs_are_left_out_unless_asked(index):
    good = authentihash((FIXTURES / "cat_member_t64.exe").read_bytes(), "sha256")
    both = index.lookup({"sha256": good}, include_unsigned=True)
    assert [m.catalog_signed for m in both] == [True, False]  # signed catalogs first
    assert both[1].catalog_path.endswith("unsigned_fixtures.cat")


def test_flat_hash_of_a_non_pe_member(index):
    inf = (SIGNIFY / "amdacpbtscoext.inf").read_bytes()
    (member,) = index.lookup({"sha1": hashlib.sha1(inf).digest()})
    assert member.catalog_path.endswith("oem89.cat") and member.catalog_version == 1
    assert member.tag_text == hashlib.sha1(inf).hexdigest().upper()


def test_second_open_reuses_the_index(catroot, tmp_path, monkeypatch):
    cache = str(tmp_path / "cache.sqlite3")
    first = CatalogIndex.open([str(catroot)], cache_path=cache)
    assert first.stats.parsed == len(CATALOGS) + 1  # the broken one is read once, too
    first.close()

    def no_parsing(*args, **kwargs):
        raise AssertionError("a catalog was parsed again")

    monkeypatch.setattr(index_module, "parse_catalog", no_parsing)
    second = CatalogIndex.open([str(catroot)], cache_path=cache)
    assert second.stats.parsed == 0 and second.stats.reused == len(CATALOGS) + 1
    assert second.catalog_count == first.catalog_count
    assert second.member_count == first.member_count
    assert len(second.warnings) == 1  # the broken catalog is still named, from the cache
    digest = authentihash((SIGNIFY / "DXCore.dll").read_bytes(), "sha256")
    assert len(second.lookup({"sha256": digest})) == 1
    second.close()


def test_changed_catalog_is_reindexed_and_removed_one_dropped(tmp_path):
    folder = tmp_path / "cats"
    folder.mkdir()
    cache = str(tmp_path / "cache.sqlite3")
    target = folder / "a.cat"
    keep = folder / "b.cat"
    target.write_bytes(build_catalog([Entry(fake_digest(1), "one.dll")]))
    keep.write_bytes(build_catalog([Entry(fake_digest(9), "nine.dll")]))
    with CatalogIndex.open([str(folder)], cache_path=cache) as first:
        assert len(first.lookup({"sha256": fake_digest(1)}, include_unsigned=True)) == 1

    target.write_bytes(build_catalog([Entry(fake_digest(2), "two.dll")]))
    stat = target.stat()
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    with CatalogIndex.open([str(folder)], cache_path=cache) as second:
        assert (second.stats.parsed, second.stats.reused) == (1, 1)
        assert second.lookup({"sha256": fake_digest(1)}, include_unsigned=True) == []
        (member,) = second.lookup({"sha256": fake_digest(2)}, include_unsigned=True)
        assert member.name == "two.dll"

    target.unlink()
    with CatalogIndex.open([str(folder)], cache_path=cache) as third:
        assert (third.stats.parsed, third.stats.removed) == (0, 1)
        assert third.catalog_count == 1
        assert third.lookup({"sha256": fake_digest(2)}, include_unsigned=True) == []
    with sqlite3.connect(cache) as conn:
        assert conn.execute("SELECT count(*) FROM members").fetchone()[0] == 1


def test_indexes_of_other_roots_stay_cached_but_out_of_view(tmp_path):
    cache = str(tmp_path / "cache.sqlite3")
    for name, seed in (("x", 1), ("y", 2)):
        (tmp_path / name).mkdir()
        (tmp_path / name / f"{name}.cat").write_bytes(build_catalog([Entry(fake_digest(seed))]))
    with CatalogIndex.open([str(tmp_path / "x")], cache_path=cache) as x:
        assert x.catalog_count == 1
    with CatalogIndex.open([str(tmp_path / "y")], cache_path=cache) as y:
        assert y.lookup({"sha256": fake_digest(1)}, include_unsigned=True) == []
        assert len(y.lookup({"sha256": fake_digest(2)}, include_unsigned=True)) == 1
    with CatalogIndex.open([str(tmp_path / "x")], cache_path=cache) as again:
        assert again.stats.parsed == 0 and again.stats.removed == 0


def test_a_single_file_is_indexed_whatever_its_name(tmp_path):
    path = tmp_path / "catalog.bin"
    path.write_bytes((FIXTURES / "fixtures.cat").read_bytes())
    with CatalogIndex.open([str(path)], cache_path=":memory:") as index:
        assert index.catalog_count == 1 and index.member_count == 2
        assert index.cache_path == ":memory:"


def test_missing_path_is_a_warning(tmp_path):
    missing = tmp_path / "nope"
    with CatalogIndex.open([str(missing)], cache_path=":memory:") as index:
        assert index.catalog_count == 0 and index.algorithms() == set()
        assert index.warnings == [f"{missing}: catalog path not found"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_fifo_and_device_catalogs_are_skipped_without_blocking(tmp_path):
    folder = tmp_path / "catroot"
    folder.mkdir()
    os.mkfifo(folder / "planted.cat")  # opening it for reading would wait for a writer forever
    shutil.copyfile(FIXTURES / "fixtures.cat", folder / "fixtures.cat")
    given = [str(folder)] + (["/dev/zero"] if os.path.exists("/dev/zero") else [])
    with CatalogIndex.open(given, cache_path=":memory:") as index:
        assert index.catalog_paths == [str(folder / "fixtures.cat")]
        assert index.warnings == [
            f"{path}: catalog skipped: not a regular file"
            for path in [str(folder / "planted.cat"), *given[1:]]
        ]


def test_corrupt_cache_is_rebuilt(catroot, tmp_path):
    cache = tmp_path / "cache.sqlite3"
    cache.write_bytes(b"this is not an SQLite database" * 100)
    with CatalogIndex.open([str(catroot)], cache_path=str(cache)) as index:
        assert any("catalog cache corrupt" in w for w in index.warnings)
        assert index.catalog_count == len(CATALOGS) and index.cache_path == str(cache)
    with CatalogIndex.open([str(catroot)], cache_path=str(cache)) as again:
        assert again.stats.parsed == 0


def test_unusable_cache_falls_back_to_memory(catroot, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    with CatalogIndex.open([str(catroot)], cache_path=str(blocker / "c.sqlite3")) as index:
        assert index.cache_path == ":memory:"
        assert any("indexing in memory" in w for w in index.warnings)
        assert index.catalog_count == len(CATALOGS)


def test_default_cache_path():
    assert default_cache_path({"CODEINTEGRITY_HOME": "/ci"}) == "/ci/catalogs.sqlite3"
    assert default_cache_path({"XDG_CACHE_HOME": "/x"}) == "/x/codeintegrity/catalogs.sqlite3"
    assert default_cache_path({}).endswith(
        os.path.join(".cache", "codeintegrity", "catalogs.sqlite3")
    )


def test_oversized_catalog_is_skipped_with_a_warning(tmp_path):
    from codeintegrity.limits import Limits

    path = tmp_path / "big.cat"
    path.write_bytes((FIXTURES / "fixtures.cat").read_bytes())
    limits = Limits(max_catalog_size=100)
    with CatalogIndex.open([str(path)], cache_path=":memory:", limits=limits) as index:
        assert index.catalog_count == 0
        assert index.warnings == [
            f"{path}: catalog skipped: 2186 bytes exceeds the catalog size limit"
        ]
