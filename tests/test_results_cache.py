"""The results cache: reuse a report only while the file and everything its verdict depends on
are unchanged; never crash on a damaged cache file."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from codeintegrity import results_cache
from codeintegrity.authenticode.trust import TrustStore
from codeintegrity.catalog.index import CatalogIndex
from codeintegrity.findings import Finding, FindingCode
from codeintegrity.limits import Limits
from codeintegrity.options import VerifyOptions
from codeintegrity.report import Report, Status
from codeintegrity.results_cache import ResultsCache, default_results_path
from codeintegrity.revocation import RevocationSources
from codeintegrity.verdict_keys import options_fingerprint
from codeintegrity.verify import verify_path

from .conftest import FIXTURES, PKI

AT = datetime(2026, 6, 1, tzinfo=UTC)
NOW = datetime(2030, 1, 1, tzinfo=UTC).timestamp()
SIGNED = "t64_sha256.exe"  # no timestamp: judged at "now"
STAMPED = "t64_sha256_ph_ts.exe"  # valid timestamp: judged at signing time
LEAF_NOT_AFTER = datetime(2045, 1, 1, tzinfo=UTC).timestamp()


def timeless(report: Report) -> Report:
    """The report without the moment chain findings were judged at (it differs run to run)."""
    findings = tuple(
        dataclasses.replace(f, detail=re.sub(r" \(judged time [^)]*\)$", "", f.detail))
        for f in report.findings
    )
    return dataclasses.replace(report, findings=findings)


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Engine:
    """verify_path that counts its calls, and can be told to refuse them."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.refuse = False

    def __call__(self, name: str, options: VerifyOptions) -> Report:
        if self.refuse:
            raise AssertionError(f"engine called for {name}: the cache should have answered")
        self.calls.append(name)
        return verify_path(name, options)


@pytest.fixture
def engine() -> Engine:
    return Engine()


@pytest.fixture
def warnings() -> list[str]:
    return []


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def open_cache(tmp_path, warnings, clock):
    opened: list[ResultsCache] = []

    def opener(**kwargs) -> ResultsCache:
        kwargs.setdefault("racy_window_ns", 0)  # files copied a moment ago are storable
        cache = ResultsCache.open(
            str(tmp_path / "cache" / "results.sqlite3"), warn=warnings.append, clock=clock, **kwargs
        )
        opened.append(cache)
        return cache

    yield opener
    for cache in opened:
        cache.close()


@pytest.fixture
def copy(tmp_path):
    def copier(name: str) -> Path:
        target = tmp_path / "files" / name
        target.parent.mkdir(exist_ok=True)
        shutil.copyfile(FIXTURES / name, target)
        return target

    return copier


def test_unchanged_file_is_answered_from_the_cache(open_cache, engine, copy, fixture_trust):
    path = copy(SIGNED)
    options = VerifyOptions(trust=fixture_trust)
    first = open_cache().verify(str(path), options, engine)
    assert first.status is Status.VALID and engine.calls == [str(path)]
    engine.refuse = True
    cache = open_cache()  # a later run: a new process would open the file the same way
    again = cache.verify(str(path), options, engine)
    assert again == first
    assert (cache.hits, cache.misses) == (1, 0)


def test_cached_report_carries_the_name_it_was_asked_by(open_cache, engine, copy, tmp_path):
    path = copy(SIGNED)
    link = tmp_path / "link.exe"
    link.symlink_to(path)
    options = VerifyOptions(trust=TrustStore.from_paths([PKI / "ca.pem"]))
    cache = open_cache()
    assert cache.verify(str(path), options, engine).path == str(path)
    engine.refuse = True
    # The key is the real path: the symlink finds the same entry, the report names the link.
    assert cache.verify(str(link), options, engine).path == str(link)


def test_rewritten_file_of_same_size_and_mtime_is_verified_again(
    open_cache, engine, copy, fixture_trust
):
    path = copy(SIGNED)
    options = VerifyOptions(trust=fixture_trust)
    cache = open_cache()
    assert cache.verify(str(path), options, engine).status is Status.VALID
    before = path.stat()
    data = bytearray(path.read_bytes())
    data[0x400] ^= 0xFF  # inside .text: the image hash no longer matches
    path.write_bytes(bytes(data))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # same size, same mtime
    assert path.stat().st_size == before.st_size
    report = cache.verify(str(path), options, engine)
    assert report.status is Status.INVALID
    assert len(engine.calls) == 2 and cache.misses == 2


EARLY = datetime(2024, 6, 1, tzinfo=UTC)  # before the test PKI's certificates are valid


@pytest.mark.parametrize(
    ("name", "change"),
    [
        pytest.param(
            SIGNED, lambda o: dataclasses.replace(o, trust=TrustStore.empty()), id="trust"
        ),
        pytest.param(SIGNED, lambda o: dataclasses.replace(o, at=EARLY), id="at"),
        pytest.param(
            SIGNED, lambda o: dataclasses.replace(o, require_page_hashes="all"), id="page-hashes"
        ),
        pytest.param(
            "q_pad_wincert.exe",
            lambda o: dataclasses.replace(o, cert_padding_check=True),
            id="padding",
        ),
        pytest.param(
            SIGNED,
            lambda o: dataclasses.replace(o, flat_digests=frozenset({"sha1"})),
            id="flat-digests",
        ),
    ],
)
def test_changed_options_miss_and_both_entries_are_kept(
    name, change, open_cache, engine, copy, fixture_trust
):
    path = copy(name)
    options = VerifyOptions(trust=fixture_trust)
    other = change(options)
    cache = open_cache()
    plain = cache.verify(str(path), options, engine)
    changed = cache.verify(str(path), other, engine)
    assert len(engine.calls) == 2
    # The answer for the new options, not the old one.
    assert timeless(changed) == timeless(verify_path(str(path), other))
    assert timeless(changed) != timeless(plain)
    engine.refuse = True
    assert timeless(cache.verify(str(path), options, engine)) == timeless(plain)
    assert timeless(cache.verify(str(path), other, engine)) == timeless(changed)


def test_page_hash_requirement_changes_the_verdict_not_just_the_key(
    open_cache, engine, copy, fixture_trust
):
    path = copy(SIGNED)  # signed without page hashes
    cache = open_cache()
    loose = cache.verify(str(path), VerifyOptions(trust=fixture_trust), engine)
    strict = cache.verify(
        str(path), VerifyOptions(trust=fixture_trust, require_page_hashes="all"), engine
    )
    assert loose.status is Status.VALID and strict.status is Status.INVALID
    assert FindingCode.PAGE_HASHES_REQUIRED in {f.code for f in strict.findings}


def test_every_verify_option_is_in_the_fingerprint(fixture_trust):
    base = VerifyOptions(trust=fixture_trust)
    changes = {
        "trust": TrustStore.empty(),
        "at": AT,
        "require_page_hashes": "drivers",
        "drivers_must_be_signed": False,
        "cert_padding_check": True,
        "extra_digests": frozenset({"sha256", "sha1"}),
        "first_page_digests": frozenset({"sha256"}),
        "flat_digests": frozenset({"md5"}),
        "limits": Limits(max_cert_entries=3),
    }
    bypass = {"catalogs", "revocation"}
    assert {f.name for f in dataclasses.fields(VerifyOptions)} == set(changes) | bypass
    reference = options_fingerprint(base)
    assert reference is not None
    for name, value in changes.items():
        changed = options_fingerprint(dataclasses.replace(base, **{name: value}))
        assert changed is not None and changed != reference, name
    # Equal anchor sets loaded twice are the same trust: the fingerprint follows the content.
    same = TrustStore.from_paths([PKI / "tsaca.pem", PKI / "ca.pem"])
    assert options_fingerprint(dataclasses.replace(base, trust=same)) == reference
    # A naive time is judged as UTC: the same instant, the same key.
    naive = options_fingerprint(dataclasses.replace(base, at=AT.replace(tzinfo=None)))
    assert naive == options_fingerprint(dataclasses.replace(base, at=AT))


def test_catalog_and_revocation_runs_bypass_the_cache(
    open_cache, engine, copy, fixture_trust, tmp_path
):
    path = copy("cat_member_t64.exe")
    index = CatalogIndex.open(
        [str(FIXTURES / "fixtures.cat")], cache_path=str(tmp_path / "cat.sqlite3")
    )
    revocation = RevocationSources(disallowed=frozenset({"00" * 20}))
    cache = open_cache()
    for options in (
        VerifyOptions(trust=fixture_trust, catalogs=index),
        VerifyOptions(trust=fixture_trust, revocation=revocation),
    ):
        assert options_fingerprint(options) is None
        first = cache.verify(str(path), options, engine)
        assert cache.verify(str(path), options, engine) == first
    assert len(engine.calls) == 4
    assert (cache.bypassed, cache.stored, cache.hits) == (4, 0, 0)
    with sqlite3.connect(cache.path) as conn:
        assert conn.execute("SELECT count(*) FROM results").fetchone() == (0,)


def test_verdict_expires_after_max_age(open_cache, engine, copy, fixture_trust, clock):
    path = copy(STAMPED)  # timestamped: no certificate boundary, only max_age
    options = VerifyOptions(trust=fixture_trust)
    cache = open_cache(max_age=timedelta(hours=1))
    cache.verify(str(path), options, engine)
    clock.now += 3599
    cache.verify(str(path), options, engine)
    assert len(engine.calls) == 1
    clock.now += 2
    cache.verify(str(path), options, engine)
    assert len(engine.calls) == 2


def test_expiry_follows_certificates_judged_at_now(open_cache, copy, fixture_trust, clock):
    cache = open_cache()
    options = VerifyOptions(trust=fixture_trust)
    untimed = verify_path(copy(SIGNED), options)
    stamped = verify_path(copy(STAMPED), options)
    day = timedelta(hours=24).total_seconds()
    # Far from any certificate boundary: max_age decides.
    assert cache.valid_until(untimed, options) == NOW + day
    # An hour before the leaf expires, a verdict judged at now holds only until then...
    clock.now = LEAF_NOT_AFTER - 3600
    assert cache.valid_until(untimed, options) == LEAF_NOT_AFTER
    # ...but one frozen at its timestamp does not move with the clock.
    assert cache.valid_until(stamped, options) == clock.now + day
    # The lifetime-signing EKU forbids the freeze: the chain is judged at now again.
    sig = stamped.signatures[0]
    leaf = dataclasses.replace(sig.chain[0], ekus=(*sig.chain[0].ekus, "1.3.6.1.4.1.311.10.3.13"))
    lifetime = dataclasses.replace(
        stamped, signatures=(dataclasses.replace(sig, chain=(leaf, *sig.chain[1:])),)
    )
    assert cache.valid_until(lifetime, options) == LEAF_NOT_AFTER
    # Before a certificate's not_before the boundary is that start (the verdict will change).
    clock.now = datetime(2024, 12, 31, 12, tzinfo=UTC).timestamp()
    assert cache.valid_until(untimed, options) == datetime(2025, 1, 1, tzinfo=UTC).timestamp()
    # With an explicit time nothing depends on the clock.
    assert cache.valid_until(untimed, dataclasses.replace(options, at=AT)) is None


def test_explicit_time_never_expires(open_cache, engine, copy, fixture_trust, clock):
    path = copy(SIGNED)
    options = VerifyOptions(trust=fixture_trust, at=AT)
    cache = open_cache(max_age=timedelta(seconds=1))
    first = cache.verify(str(path), options, engine)
    clock.now += 10 * 365 * 86400
    assert cache.verify(str(path), options, engine) == first
    assert len(engine.calls) == 1


def test_cached_untrusted_verdict_names_the_time_it_is_reused_at(open_cache, engine, copy, clock):
    path = copy(SIGNED)
    options = VerifyOptions(trust=TrustStore.empty())
    cache = open_cache()
    first = cache.verify(str(path), options, engine)
    (untrusted,) = [f for f in first.findings if f.code is FindingCode.CHAIN_UNTRUSTED]
    assert "(judged time " in untrusted.detail
    clock.now += 3600
    again = cache.verify(str(path), options, engine)
    assert len(engine.calls) == 1
    stamp = datetime.fromtimestamp(clock.now, UTC).isoformat()
    (reused,) = [f for f in again.findings if f.code is FindingCode.CHAIN_UNTRUSTED]
    assert reused.detail.endswith(f"(judged time {stamp})")
    assert reused.detail.split(" (judged time ")[0] == untrusted.detail.split(" (judged time ")[0]


def test_file_changed_while_verified_is_not_stored(open_cache, copy, fixture_trust):
    path = copy(SIGNED)
    options = VerifyOptions(trust=fixture_trust)

    def racing(name: str, opts: VerifyOptions) -> Report:
        report = verify_path(name, opts)
        path.write_bytes(path.read_bytes())  # same bytes, new mtime/ctime
        return report

    cache = open_cache()
    cache.verify(str(path), options, racing)
    assert cache.stored == 0 and cache.misses == 1


def test_recently_modified_file_is_not_stored(open_cache, engine, copy, fixture_trust):
    path = copy(SIGNED)  # written just now: a same-tick rewrite could go unseen
    cache = open_cache(racy_window_ns=60 * 10**9)
    cache.verify(str(path), VerifyOptions(trust=fixture_trust), engine)
    cache.verify(str(path), VerifyOptions(trust=fixture_trust), engine)
    assert cache.stored == 0 and len(engine.calls) == 2


def test_primitive_failure_is_not_stored(open_cache, copy, fixture_trust):
    path = copy(SIGNED)

    def failing(name: str, opts: VerifyOptions) -> Report:
        report = verify_path(name, opts)
        finding = Finding(FindingCode.PRIMITIVE_FAILED, "sha256 refused")
        return dataclasses.replace(report, findings=(*report.findings, finding))

    cache = open_cache()
    cache.verify(str(path), VerifyOptions(trust=fixture_trust), failing)
    assert cache.stored == 0


def test_corrupt_cache_file_is_rebuilt_with_one_warning(
    open_cache, engine, copy, fixture_trust, tmp_path, warnings
):
    path = copy(SIGNED)
    options = VerifyOptions(trust=fixture_trust)
    cache_file = tmp_path / "cache" / "results.sqlite3"
    cache_file.parent.mkdir()
    cache_file.write_bytes(b"\x00garbage, not SQLite\xff" * 300)
    cache = open_cache()
    assert cache.enabled
    assert len(warnings) == 1 and "corrupt" in warnings[0] and "rebuilding" in warnings[0]
    assert str(cache_file) in warnings[0] and "\n" not in warnings[0]
    cache.verify(str(path), options, engine)
    engine.refuse = True
    assert open_cache().verify(str(path), options, engine).status is Status.VALID
    assert len(warnings) == 1


def test_damaged_row_is_dropped_and_verified_again(
    open_cache, engine, copy, fixture_trust, warnings
):
    path = copy(SIGNED)
    options = VerifyOptions(trust=fixture_trust)
    cache = open_cache()
    first = cache.verify(str(path), options, engine)
    with sqlite3.connect(cache.path) as conn:
        conn.execute("""UPDATE results SET report = '{"path": "x", "status": 7}'""")
    again = open_cache().verify(str(path), options, engine)
    assert again == first and len(engine.calls) == 2
    assert len(warnings) == 1 and "damaged results cache entry" in warnings[0]


def test_someone_elses_database_is_left_alone(open_cache, engine, copy, fixture_trust, tmp_path):
    path = copy(SIGNED)
    foreign = tmp_path / "cache" / "results.sqlite3"
    foreign.parent.mkdir()
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE events (body TEXT)")
        conn.execute("INSERT INTO events VALUES ('keep me')")
    conn.close()
    warnings: list[str] = []
    cache = ResultsCache.open(str(foreign), warn=warnings.append)
    assert not cache.enabled
    assert len(warnings) == 1 and "not a codeintegrity results cache" in warnings[0]
    report = cache.verify(str(path), VerifyOptions(trust=fixture_trust), engine)
    assert report.status is Status.VALID and cache.bypassed == 1
    cache.close()
    with sqlite3.connect(foreign) as conn:
        assert conn.execute("SELECT body FROM events").fetchall() == [("keep me",)]
    conn.close()


def test_older_schema_is_replaced(open_cache, tmp_path, warnings):
    old = tmp_path / "cache" / "results.sqlite3"
    old.parent.mkdir()
    with sqlite3.connect(old) as conn:
        conn.execute("CREATE TABLE results (path TEXT)")
        conn.execute(f"PRAGMA application_id = {results_cache.APPLICATION_ID}")
        conn.execute("PRAGMA user_version = 0")
    conn.close()
    cache = open_cache()
    assert cache.enabled and warnings == []
    with sqlite3.connect(cache.path) as conn:
        columns = {r[1] for r in conn.execute("PRAGMA table_info(results)")}
    conn.close()
    assert {"fingerprint", "st_ino", "valid_until", "report"} <= columns


def test_unusable_location_warns_and_caches_nothing(engine, copy, fixture_trust, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    warnings: list[str] = []
    cache = ResultsCache.open(str(blocker / "sub" / "results.sqlite3"), warn=warnings.append)
    assert not cache.enabled and len(warnings) == 1 and "not caching" in warnings[0]
    path = copy(SIGNED)
    assert cache.verify(str(path), VerifyOptions(trust=fixture_trust), engine).ok
    assert blocker.read_text() == "x"


def test_default_location_follows_the_catalog_cache_directory():
    assert default_results_path({"CODEINTEGRITY_HOME": "/ci"}) == "/ci/results.sqlite3"
    assert default_results_path({"XDG_CACHE_HOME": "/xdg"}) == "/xdg/codeintegrity/results.sqlite3"
    home = default_results_path({})
    assert home == str(Path("~").expanduser() / ".cache" / "codeintegrity" / "results.sqlite3")


def test_expired_rows_are_pruned_when_opened(open_cache, engine, copy, fixture_trust, clock):
    path = copy(STAMPED)
    open_cache().verify(str(path), VerifyOptions(trust=fixture_trust), engine)
    clock.now += 2 * 86400
    cache = open_cache()
    with sqlite3.connect(cache.path) as conn:
        assert conn.execute("SELECT count(*) FROM results").fetchone() == (0,)
    conn.close()


class BrokenConnection:
    """A connection whose database went bad under it (as a disk error would make it)."""

    def execute(self, *_args):
        raise sqlite3.DatabaseError("database disk image is malformed")

    def close(self) -> None:
        return None


def test_corruption_found_mid_run_rebuilds_once(open_cache, engine, copy, fixture_trust, warnings):
    path = copy(SIGNED)
    options = VerifyOptions(trust=fixture_trust)
    cache = open_cache()
    cache._conn = BrokenConnection()  # type: ignore[assignment]
    assert cache.verify(str(path), options, engine).status is Status.VALID
    assert len(warnings) == 1 and "corrupt" in warnings[0] and "rebuilding" in warnings[0]
    assert cache.enabled
    cache.verify(str(path), options, engine)  # stored in the rebuilt file
    engine.refuse = True
    assert cache.verify(str(path), options, engine).status is Status.VALID
    assert len(warnings) == 1


def _rows(cache: ResultsCache) -> int:
    """Rows another process sees in the cache file."""
    conn = sqlite3.connect(cache.path)
    try:
        return conn.execute("SELECT count(*) FROM results").fetchone()[0]
    finally:
        conn.close()


def _judged(cache: ResultsCache, paths: list[Path], options: VerifyOptions) -> None:
    """What a scan does per file: look up, judge elsewhere, store the encoded report."""
    from codeintegrity.scan.outcome import encode_report

    for path in paths:
        cached, pending = cache.lookup_encoded(str(path), options)
        assert cached is None and pending is not None
        cache.store_encoded(pending, encode_report(verify_path(pending.real, options)))


def test_a_scan_writes_its_rows_together_without_holding_the_write_lock_between(
    open_cache, tmp_path, fixture_trust, monkeypatch
):
    monkeypatch.setattr(results_cache, "WRITE_ROWS", 3)
    monkeypatch.setattr(results_cache, "WRITE_SECONDS", 3600.0)
    folder = tmp_path / "many"
    folder.mkdir()
    paths = []
    for i in range(7):
        paths.append(folder / f"{i}.exe")
        shutil.copyfile(FIXTURES / SIGNED, paths[-1])
    options = VerifyOptions(trust=fixture_trust)
    cache = open_cache()
    _judged(cache, paths[:2], options)
    assert cache.stored == 2 and _rows(cache) == 0  # gathering
    # Between writes the file is free: another run can write at once (no open transaction).
    other = sqlite3.connect(cache.path, timeout=0)
    other.execute("BEGIN IMMEDIATE")
    other.execute("ROLLBACK")
    other.close()
    _judged(cache, paths[2:3], options)
    assert _rows(cache) == 3  # the third row made a batch: written in one transaction
    _judged(cache, paths[3:7], options)
    assert _rows(cache) == 6
    cache.close()
    assert _rows(cache) == 7  # the rest at close


def test_rows_waiting_too_long_are_written_at_the_next_lookup(
    open_cache, copy, fixture_trust, monkeypatch
):
    monkeypatch.setattr(results_cache, "WRITE_SECONDS", 0.0)
    cache = open_cache()
    path = copy(SIGNED)
    options = VerifyOptions(trust=fixture_trust)
    _judged(cache, [path], options)
    assert _rows(cache) == 1
    # The same file asked again in one run reads back what was judged.
    monkeypatch.setattr(results_cache, "WRITE_SECONDS", 3600.0)
    path.touch()  # changed: judged and stored again, not written yet
    os.utime(path, ns=(0, 0))
    _judged(cache, [path], options)
    hit, pending = cache.lookup_encoded(str(path), options)
    assert hit is not None and pending is None and _rows(cache) == 1


def test_a_cache_dropped_without_close_still_writes_what_it_judged(tmp_path, copy, fixture_trust):
    cache = ResultsCache.open(str(tmp_path / "c.sqlite3"), racy_window_ns=0)
    _judged(cache, [copy(SIGNED)], VerifyOptions(trust=fixture_trust))
    path = cache.path
    del cache
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT count(*) FROM results").fetchone()[0] == 1
    conn.close()
