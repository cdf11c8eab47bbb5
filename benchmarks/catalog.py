"""Benchmark the catalog index: indexing throughput, reuse of the persisted index, lookups.

Usage: python benchmarks/catalog.py [--members 100000] [--catalogs 100] [--lookups 10000]
                                    [--sign 2]

Writes a CatRoot-like tree of catalogs under benchmarks/_work/catroot (asn1crypto, the same
builder the tests use; every 4th member carries a page-hash table), optionally signs the first
--sign catalogs with osslsigncode and the test PKI, then reports:
- first open (parse + SQLite insert): members indexed per second
- second open (nothing changed): wall time, and that nothing was parsed
- open after touching one catalog: wall time (re-indexes exactly one)
- --lookups lookups (half listed digests, half absent): lookups per second
- the size of the SQLite file
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.catalog.catbuild import Entry, build_catalog, fake_digest  # noqa: E402

from codeintegrity.catalog import CatalogIndex  # noqa: E402

WORK = ROOT / "benchmarks" / "_work"
PKI = ROOT / "tests" / "data" / "pki"


def _page_table(seed: int, pages: int = 8) -> bytes:
    rows = [(4096 * i).to_bytes(4, "little") + fake_digest(seed * 64 + i) for i in range(pages)]
    return b"".join(rows) + (4096 * pages).to_bytes(4, "little") + bytes(32)


def generate(folder: Path, members: int, catalogs: int, sign: int) -> list[bytes]:
    """Write the catalogs; returns every listed digest."""
    shutil.rmtree(folder, ignore_errors=True)
    digests: list[bytes] = []
    per_catalog = -(-members // catalogs)
    seed = 0
    for number in range(catalogs):
        entries = []
        for _ in range(min(per_catalog, members - seed)):
            digest = fake_digest(seed)
            table = _page_table(seed) if seed % 4 == 0 else None
            entries.append(Entry(digest, f"file{seed}.dll", table))
            digests.append(digest)
            seed += 1
        guid = "{F750E6C3-38EE-11D1-85E5-00C04FC295EE}" if number % 2 else "{127D0A1D}"
        target = folder / guid / f"bench{number:05d}.cat"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(build_catalog(entries, attributes={"OSAttr": "2:10.0"}))
        if number < sign:
            signed = target.with_suffix(".signed")
            subprocess.run(
                ["osslsigncode", "sign", "-certs", str(PKI / "leaf.pem"), "-key",
                 str(PKI / "leaf.key"), "-h", "sha256", "-in", str(target), "-out", str(signed)],
                check=True, capture_output=True,
            )  # fmt: skip
            signed.replace(target)
    return digests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--catalogs", type=int, default=100)
    parser.add_argument("--lookups", type=int, default=10_000)
    parser.add_argument("--sign", type=int, default=2, help="catalogs signed with osslsigncode")
    args = parser.parse_args()
    if args.sign and shutil.which("osslsigncode") is None:
        print("osslsigncode not found: catalogs stay unsigned")
        args.sign = 0

    catroot = WORK / "catroot"
    cache = WORK / "catalogs.sqlite3"
    started = time.perf_counter()
    digests = generate(catroot, args.members, args.catalogs, args.sign)
    print(f"generated {len(digests)} members in {args.catalogs} catalogs "
          f"({sum(f.stat().st_size for f in catroot.rglob('*.cat')) / 2**20:.1f} MiB) "
          f"in {time.perf_counter() - started:.1f} s")  # fmt: skip
    cache.unlink(missing_ok=True)

    started = time.perf_counter()
    with CatalogIndex.open([str(catroot)], cache_path=str(cache)) as index:
        first = time.perf_counter() - started
        assert index.member_count == len(digests), (index.member_count, index.warnings)
    print(f"first open:  {first:.2f} s, {len(digests) / first:,.0f} members/s indexed")

    started = time.perf_counter()
    with CatalogIndex.open([str(catroot)], cache_path=str(cache)) as index:
        second = time.perf_counter() - started
        assert index.stats.parsed == 0
        print(f"second open: {second * 1000:.1f} ms (parsed {index.stats.parsed}, "
              f"reused {index.stats.reused} catalogs)")  # fmt: skip

    touched = next(iter(sorted(catroot.rglob("*.cat"))))
    stat = touched.stat()
    os.utime(touched, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    started = time.perf_counter()
    with CatalogIndex.open([str(catroot)], cache_path=str(cache)) as index:
        third = time.perf_counter() - started
        print(f"open after touching one catalog: {third * 1000:.1f} ms "
              f"(parsed {index.stats.parsed})")  # fmt: skip

        rng = random.Random(1)
        hits = rng.sample(digests, args.lookups // 2)
        misses = [fake_digest(10**9 + i) for i in range(args.lookups - len(hits))]
        queries = hits + misses
        rng.shuffle(queries)
        started = time.perf_counter()
        found = sum(1 for q in queries if index.lookup({"sha256": q}, include_unsigned=True))
        elapsed = time.perf_counter() - started
        assert found == len(hits)
        print(f"lookups: {len(queries)} in {elapsed:.2f} s, {len(queries) / elapsed:,.0f}/s "
              f"({found} found)")  # fmt: skip
    print(f"index file: {cache.stat().st_size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
