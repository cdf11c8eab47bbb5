"""Benchmark tree scans: codeintegrity --jobs 1/2, --dask local:2, warm results cache, against
signify (one process), osslsigncode (once per file) and the hashlib floor; parent peak RSS.

Usage: python benchmarks/scan.py [--corpus DIR] [--copies 20] [--small 100000]
                                 [--signify-python PATH] [--skip-dask]

Every figure is the wall time of a whole process (or of all the processes for osslsigncode),
measured once in this run, printed with its ratio to the hashlib floor and to codeintegrity
--jobs 1. signify needs its own Python with the oscrypto patch of the corpus RECIPES.md (pass
--signify-python; skipped if absent). The warm results cache is also given per file, with the
start-up (the same command on an empty folder) taken out. Parent peak RSS is GNU time's %M of a
--jobs 1 run (one process) on synthetic trees of as many tiny files as the copies tree and of
--small of them, and on the copies tree.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus" / "samples"
CI = [sys.executable, "-m", "codeintegrity", "verify", "--json", "--no-store"]

SIGNIFY_SCRIPT = r"""
import os, sys
from signify.authenticode import AuthenticodeFile
for root, _dirs, files in os.walk(sys.argv[1]):
    for name in sorted(files):
        path = os.path.join(root, name)
        with open(path, "rb") as f:
            if f.read(2) != b"MZ":
                continue
            f.seek(0)
            try:
                AuthenticodeFile.from_stream(f).explain_verify(multi_verify_mode="all")
            except Exception:
                pass
"""

FLOOR_SCRIPT = r"""
import hashlib, os, sys
for root, _dirs, files in os.walk(sys.argv[1]):
    for name in files:
        with open(os.path.join(root, name), "rb") as f:
            if f.read(2) == b"MZ":
                f.seek(0)
                hashlib.sha256(f.read()).digest()
"""


def pe_files(folder: Path) -> list[Path]:
    out = []
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink():
            with path.open("rb") as handle:
                if handle.read(2) == b"MZ":
                    out.append(path)
    return out


def timed(cmd: list[str], env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=False)
    return time.perf_counter() - started


def peak_rss_kb(cmd: list[str], env: dict[str, str]) -> int:
    out = subprocess.run(
        ["/usr/bin/time", "-f", "%M", *cmd],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        check=False,
    )
    return int(out.stderr.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--copies", type=int, default=20)
    parser.add_argument("--small", type=int, default=100000)
    parser.add_argument("--signify-python", default=os.environ.get("SIGNIFY_PYTHON"))
    parser.add_argument("--skip-dask", action="store_true")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ci-scan-bench-"))
    env = dict(os.environ, CODEINTEGRITY_HOME=str(work / "home"))
    files = pe_files(args.corpus)
    rows: list[tuple[str, float]] = []
    try:
        corpus = work / "corpus"
        corpus.mkdir()
        for i, path in enumerate(files):
            os.link(path, corpus / f"{i:04d}_{path.name}")
        # Compile bytecode first so no row pays for it.
        subprocess.run(
            [*CI, "--no-cache", "--jobs", "1", str(files[0])],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
        floor = timed([sys.executable, "-c", FLOOR_SCRIPT, str(corpus)])
        rows.append((f"hashlib sha256 floor ({len(files)} files)", floor))
        one = timed([*CI, "--no-cache", "--jobs", "1", str(corpus)], env)
        rows.append(("codeintegrity --jobs 1", one))
        rows.append(
            ("codeintegrity --jobs 2", timed([*CI, "--no-cache", "--jobs", "2", str(corpus)], env))
        )
        cache = str(work / "results.sqlite3")
        timed([*CI, "--cache", cache, "--jobs", "1", str(corpus)], env)
        rows.append(
            (
                "codeintegrity warm results cache",
                timed([*CI, "--cache", cache, "--jobs", "1", str(corpus)], env),
            )
        )
        if args.signify_python and Path(args.signify_python).exists():
            rows.append(
                (
                    "signify 0.9 (one process)",
                    timed([args.signify_python, "-c", SIGNIFY_SCRIPT, str(corpus)]),
                )
            )
        if shutil.which("osslsigncode"):
            started = time.perf_counter()
            for path in corpus.iterdir():
                subprocess.run(
                    ["osslsigncode", "verify", "-in", str(path)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    check=False,
                )
            rows.append(("osslsigncode (once per file)", time.perf_counter() - started))
        print_table(f"Corpus: {args.corpus} ({len(files)} PE files)", rows, floor, one)

        tree = work / "tree"
        for copy in range(args.copies):
            folder = tree / f"copy{copy:02d}"
            folder.mkdir(parents=True)
            for path in corpus.iterdir():
                os.link(path, folder / path.name)
        count = len(files) * args.copies
        floor = timed([sys.executable, "-c", FLOOR_SCRIPT, str(tree)])
        rows = [(f"hashlib sha256 floor ({count} files)", floor)]
        one = timed([*CI, "--no-cache", "--jobs", "1", str(tree)], env)
        rows.append(("codeintegrity --jobs 1", one))
        rows.append(
            ("codeintegrity --jobs 2", timed([*CI, "--no-cache", "--jobs", "2", str(tree)], env))
        )
        if not args.skip_dask:
            two = rows[-1][1]
            dask = dask_rows([*CI, "--no-cache"], tree, env)
            rows += dask
        cache = str(work / "tree-results.sqlite3")
        cold = timed([*CI, "--cache", cache, "--jobs", "1", str(tree)], env)
        warm = timed([*CI, "--cache", cache, "--jobs", "1", str(tree)], env)
        rows.append(("codeintegrity cold results cache", cold))
        rows.append(("codeintegrity warm results cache", warm))
        empty = work / "empty"
        empty.mkdir()
        start = timed([*CI, "--cache", cache, "--jobs", "1", str(empty)], env)
        rows.append(("codeintegrity on an empty folder (start-up)", start))
        print_table(f"Tree: {count} files ({args.copies} hard-linked copies)", rows, floor, one)
        if not args.skip_dask:
            ratios = ", ".join(f"{n.split('--dask ')[1]} {t / two:.2f}x" for n, t in dask)
            print(f"Dask time / --jobs 2 time: {ratios}")
        per_cold, per_warm = (cold - start) / count, max(warm - start, 1e-9) / count
        print(
            f"Warm rescan: {cold / warm:.1f}x faster than cold, whole process; per file, "
            f"start-up taken out: cold {per_cold * 1000:.2f} ms, warm "
            f"{per_warm * 1000:.3f} ms ({per_cold / per_warm:.0f}x)"
        )

        few, many = small_tree(work / "few", count), small_tree(work / "many", args.small)
        rss_few = peak_rss_kb([*CI, "--no-cache", "--jobs", "1", str(few)], env)
        rss_many = peak_rss_kb([*CI, "--no-cache", "--jobs", "1", str(many)], env)
        rss_tree = peak_rss_kb([*CI, "--no-cache", "--jobs", "1", str(tree)], env)
        print(
            f"\nParent peak RSS (--jobs 1), synthetic trees of 64-byte MZ files: {count} files "
            f"{rss_few / 1024:.1f} MiB, {args.small} files {rss_many / 1024:.1f} MiB "
            f"(ratio {rss_many / rss_few:.3f}; target within 10%); the {count} real PE files "
            f"{rss_tree / 1024:.1f} MiB"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def small_tree(folder: Path, count: int) -> Path:
    """``count`` tiny files that start with MZ (malformed PEs: each is judged and reported)."""
    for i in range(count):
        sub = folder / f"d{i // 1000:03d}"
        if i % 1000 == 0:
            sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i:06d}.exe").write_bytes(b"MZ" + bytes(62))
    return folder


def dask_rows(cmd: list[str], tree: Path, env: dict[str, str]) -> list[tuple[str, float]]:
    """--dask local:2 (what its user waits, cluster start included), then the same tree on a
    cluster already running (`dask scheduler` and 2 `dask worker --nthreads 1` processes
    started here): its first run (workers import the engine, caches cold) and a second one
    (warm workers). main() prints each one's ratio to --jobs 2 of the same run."""
    import socket

    local = timed([*cmd, "--dask", "local:2", str(tree)], env)
    rows = [("codeintegrity --dask local:2 (cluster start incl.)", local)]
    dask = str(Path(sys.executable).with_name("dask"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    scheduler = [dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"]
    worker = [dask, "worker", address, "--nthreads", "1", "--no-dashboard"]
    procs = [
        subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        for argv in (scheduler, worker, worker)
    ]
    try:
        from distributed import Client

        with Client(address, timeout="60s") as client:
            client.wait_for_workers(2, timeout=120)
        run = [*cmd, "--dask", address, str(tree)]
        rows.append(("codeintegrity --dask tcp:// (running, 1st run)", timed(run, env)))
        rows.append(("codeintegrity --dask tcp:// (running, warm)", timed(run, env)))
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    return rows


def print_table(title: str, rows: list[tuple[str, float]], floor: float, one: float) -> None:
    print(f"\n{title}")
    print(f"{'':52} {'seconds':>8} {'x floor':>8} {'vs --jobs 1':>12}")
    for name, seconds in rows:
        print(f"{name:52} {seconds:8.2f} {seconds / floor:8.1f} {one / seconds:11.2f}x")


if __name__ == "__main__":
    main()
