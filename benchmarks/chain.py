"""Whole-process time of `codeintegrity verify` on small files, for every kind of chain verdict.

Usage: python benchmarks/chain.py [--runs 7]

Times the CLI (Python start-up included, default trust, no store, no cache) on: the 24 KB
signed demo DLL (valid), a Debian-signed EFI binary (chain reaches no Microsoft root:
untrusted), an Intel DLL whose CA carries UPN name constraints (valid), and the chain-rule
fixtures (a rejected EKU-restricted chain, under their test root). Prints medians, the ratio to
the valid case and to the 0.25 s small-file budget. Last, in one process, the cost of the
untrusted verdict against the cost of building a pyhanko trust registry over all anchors (what
the untrusted path did before).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
BUDGET = 0.25


def median_time(command: list[str], runs: int) -> float:
    subprocess.run(command, capture_output=True, check=False)  # warm the page cache
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, check=False)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    import codeintegrity

    package = Path(codeintegrity.__file__).parent
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(package)], check=True)
    cli = [sys.executable, "-m", "codeintegrity", "verify", "--no-store", "--no-cache"]
    chain_trust = ["--trust", str(DATA / "chain" / "anchors.pem")]
    efi = next((DATA / "samples" / "signed").rglob("fwupdx64.efi.signed"))
    cases = [
        ("valid (demo DLL)", [str(package / "data" / "demo_signed.dll")]),
        ("untrusted (Debian EFI)", [str(efi)]),
        ("valid, UPN constraints (Intel)", [str(DATA / "chain" / "intel" / "tbbmalloc_proxy.dll")]),
        (
            "rejected, EKU by issuer",
            [*chain_trust, str(DATA / "chain" / "eku_issuer_serverauth.exe")],
        ),
    ]
    startup = median_time([sys.executable, "-c", "pass"], args.runs)
    print(f"Python start-up alone: {startup * 1e3:.0f} ms; budget {BUDGET * 1e3:.0f} ms")
    print(f"{'case':<34} {'ms':>7} {'x valid':>8} {'x budget':>9}")
    base = None
    for label, extra in cases:
        wall = median_time([*cli, *extra], args.runs)
        base = base or wall
        print(f"{label:<34} {wall * 1e3:7.0f} {wall / base:8.2f} {wall / BUDGET:9.2f}")

    from codeintegrity.authenticode import chaincache
    from codeintegrity.authenticode.trust import TrustStore
    from codeintegrity.options import VerifyOptions
    from codeintegrity.verify import verify_path

    store = TrustStore.default()
    verify_path(str(efi), VerifyOptions())  # imports and the anchor indexes
    chaincache.clear()
    start = time.perf_counter()
    verify_path(str(efi), VerifyOptions())
    untrusted = time.perf_counter() - start
    start = time.perf_counter()
    store.trust_manager(store.certificates)
    registry = time.perf_counter() - start
    print(
        f"in process: untrusted verdict {untrusted * 1e3:.1f} ms; a registry over all "
        f"{len(store)} anchors (the old path) {registry * 1e3:.0f} ms "
        f"({registry / untrusted:.0f}x)"
    )


if __name__ == "__main__":
    main()
