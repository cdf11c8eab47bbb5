"""Benchmark tree scans: codeintegrity --jobs 1/2, --dask local:2, warm results cache, against
signify (one process), osslsigncode (once per file) and the hashlib floor; parent peak RSS.

Usage: python benchmarks/scan.py [--corpus DIR] [--copies 20] [--small 100000] [--rounds 5]
                                 [--signify-python PATH] [--skip-dask]

Every figure is the wall time of a whole process (or of all the processes for osslsigncode).
Each row runs once per round, the rounds one after another; the table gives each row's median
and range, and its ratios to the hashlib floor and to codeintegrity --jobs 1 as the median (and
range) of the ratios within each round. signify needs its own Python with the oscrypto patch
of the corpus RECIPES.md (pass --signify-python; skipped if absent). The warm results cache is
also given per file, with the start-up (the same command on an empty folder) taken out. Parent
peak RSS is GNU time's %M of a --jobs 1 run (one process) on synthetic trees of as many tiny
files as the copies tree and of --small of them, and on the copies tree. The tree rounds also
time a CPU-bound loop alone and as two processes at once: the machine's own two-process
speed-up, the ceiling against which --jobs 2 is read. The tree is --copies copies of the corpus;
one row scans the same files as hard links, whose bytes a run judges once (scan/links.py).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
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

# A CPU-bound loop, about half a second: run alone and as two processes at once, it shows how
# much of a second core this machine really gives (a shared or throttled VM gives less than 2x).
SPIN_SCRIPT = "x = 0\nfor i in range(12_000_000):\n    x += i\n"

# What `--dask local:2` costs before its first task: importing distributed and starting the
# LocalCluster (the process's own start-up excluded), printed to stdout in seconds.
CONNECT_SCRIPT = r"""
import time
started = time.perf_counter()
from codeintegrity.scan.dask_backend import connect
session = connect("local:2")
print(time.perf_counter() - started)
session.close()
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


def dask_start(env: dict[str, str]) -> float:
    out = subprocess.run(
        [sys.executable, "-c", CONNECT_SCRIPT],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return float(out.stdout.split()[0])


def spin(processes: int) -> float:
    """Wall time of ``processes`` copies of the CPU-bound loop started together."""
    started = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", SPIN_SCRIPT]) for _ in range(processes)]
    for proc in procs:
        proc.wait()
    return time.perf_counter() - started


def print_ceiling(one: list[float], two: list[float], times: dict[str, list[float]]) -> None:
    """The machine's own two-process speed-up (two loops at once do twice the work of one), and
    how much of it --jobs 2 reached over --jobs 1, both per round (medians and ranges)."""
    ceiling = [2 * a / b for a, b in zip(one, two, strict=True)]
    reached = [(j1 / j2) / c for j1, j2, c in zip(times[ONE], times[TWO], ceiling, strict=True)]
    # The start-up (the empty-folder row) is serial in both: taken out, what is left is the
    # scan itself, two workers against one process.
    rounds = zip(times[ONE], times[TWO], times[START], strict=True)
    scan_only = [(j1 - e) / (j2 - e) for j1, j2, e in rounds if j2 - e > 0.01]
    print(
        f"Machine ceiling: two CPU-bound processes at once run {_median_range(ceiling)} as fast "
        f"as one (2.00x on two free cores); --jobs 2 over --jobs 1 reached "
        f"{statistics.median(reached):.0%} ({min(reached):.0%}-{max(reached):.0%}) of it; "
        f"with each round's start-up taken out, --jobs 2 is {_median_range(scan_only)} faster"
    )


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


Row = tuple[str, Callable[[], float]]


def measure(rows: list[Row], rounds: int) -> dict[str, list[float]]:
    """Every row once per round, rounds one after another: rows of one round see the same
    machine (this VM's speed drifts by tens of percent from one minute to the next), so ratios
    are taken within a round and their median reported."""
    times: dict[str, list[float]] = {name: [] for name, _ in rows}
    for _ in range(rounds):
        for name, run in rows:
            times[name].append(run())
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--copies", type=int, default=20)
    parser.add_argument("--small", type=int, default=100000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--signify-python", default=os.environ.get("SIGNIFY_PYTHON"))
    parser.add_argument("--skip-dask", action="store_true")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ci-scan-bench-"))
    env = dict(os.environ, CODEINTEGRITY_HOME=str(work / "home"))
    # Every row must find its bytecode compiled: with PYTHONDONTWRITEBYTECODE set (some shells
    # and CI images set it), a module edited since its .pyc was written is compiled again by
    # every process, which once added 0.1 s to each start-up measured here.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "src")], check=False)
    files = pe_files(args.corpus)
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
        # The results cache does not trust a result stored within 2 s of a file's last change
        # (linking it changed its ctime): let that pass before filling the cache.
        time.sleep(2.5)
        cache = str(work / "results.sqlite3")
        timed([*CI, "--cache", cache, "--jobs", "1", str(corpus)], env)
        rows: list[Row] = [
            (FLOOR, lambda: timed([sys.executable, "-c", FLOOR_SCRIPT, str(corpus)])),
            (ONE, lambda: timed([*CI, "--no-cache", "--jobs", "1", str(corpus)], env)),
            (TWO, lambda: timed([*CI, "--no-cache", "--jobs", "2", str(corpus)], env)),
            (WARM, lambda: timed([*CI, "--cache", cache, "--jobs", "1", str(corpus)], env)),
        ]
        if args.signify_python and Path(args.signify_python).exists():
            signify = [args.signify_python, "-c", SIGNIFY_SCRIPT, str(corpus)]
            rows.append(("signify 0.9 (one process)", lambda: timed(signify)))
        if shutil.which("osslsigncode"):
            rows.append(("osslsigncode (once per file)", lambda: osslsigncode(corpus)))
        times = measure(rows, args.rounds)
        title = f"Corpus: {args.corpus} ({len(files)} PE files), {args.rounds} rounds"
        print_table(title, times)

        # Copies, not hard links: a run judges the bytes of a file with several names once
        # (scan/links.py), so a tree of links measures that, in its own row.
        tree, linked = work / "tree", work / "linked"
        for copy in range(args.copies):
            folder, links = tree / f"copy{copy:02d}", linked / f"copy{copy:02d}"
            folder.mkdir(parents=True)
            links.mkdir(parents=True)
            for path in corpus.iterdir():
                shutil.copyfile(path, folder / path.name)
                os.link(path, links / path.name)
        count = len(files) * args.copies
        time.sleep(2.5)  # past the results cache's window for fresh changes (as above)
        tree_cache = work / "tree-results.sqlite3"
        empty = work / "empty"
        empty.mkdir()

        def cold() -> float:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{tree_cache}{suffix}").unlink(missing_ok=True)
            return timed([*CI, "--cache", str(tree_cache), "--jobs", "1", str(tree)], env)

        rows = [
            (FLOOR, lambda: timed([sys.executable, "-c", FLOOR_SCRIPT, str(tree)])),
            (ONE, lambda: timed([*CI, "--no-cache", "--jobs", "1", str(tree)], env)),
            (TWO, lambda: timed([*CI, "--no-cache", "--jobs", "2", str(tree)], env)),
            (LINKED, lambda: timed([*CI, "--no-cache", "--jobs", "1", str(linked)], env)),
            (SPIN_ONE, lambda: spin(1)),
            (SPIN_TWO, lambda: spin(2)),
        ]
        if not args.skip_dask:
            local = [*CI, "--no-cache", "--dask", "local:2", str(tree)]
            rows.append((LOCAL, lambda: timed(local, env)))
        rows += [
            (COLD, cold),
            (WARM, lambda: timed([*CI, "--cache", str(tree_cache), "--jobs", "1", str(tree)], env)),
            (
                START,
                lambda: timed([*CI, "--cache", str(tree_cache), "--jobs", "1", str(empty)], env),
            ),
        ]
        times = measure(rows, args.rounds)
        ceiling = {name: times.pop(name) for name in (SPIN_ONE, SPIN_TWO)}
        if not args.skip_dask:
            for name, seconds in dask_cluster_rows([*CI, "--no-cache"], tree, env):
                times[name] = [seconds] * args.rounds  # once: a running cluster's 1st/2nd run
        print_table(f"Tree: {count} files ({args.copies} copies of the corpus)", times)
        print_ceiling(ceiling[SPIN_ONE], ceiling[SPIN_TWO], times)
        if not args.skip_dask:
            ratios = [
                f"{name.split('--dask ')[1]} {_median_range(_ratios(times[name], times[TWO]))}"
                for name in times
                if "--dask" in name
            ]
            print(f"Dask time / --jobs 2 time: {', '.join(ratios)}")
            starts = [dask_start(env) for _ in range(args.rounds)]
            print(
                f"Of which --dask local:2 spends before its first task (import distributed, "
                f"start the LocalCluster): {statistics.median(starts):.2f} s "
                f"({min(starts):.2f}-{max(starts):.2f}); 15% of --jobs 2 is "
                f"{0.15 * statistics.median(times[TWO]):.2f} s"
            )
        whole = _median_range(_ratios(times[COLD], times[WARM]))
        # Per file, each round's start-up taken out; a round whose warm run was not measurably
        # longer than its start-up says nothing per file and is left out.
        rounds = zip(times[COLD], times[WARM], times[START], strict=True)
        pairs = [((c - e) / count, (w - e) / count) for c, w, e in rounds if w - e > 0.01]
        if pairs:
            per_file = _median_range([c / w for c, w in pairs])
            warm_ms = statistics.median(w for _c, w in pairs) * 1000
            detail = f"per file, start-up taken out, {per_file} (warm {warm_ms:.3f} ms a file)"
        else:
            detail = "per file: the warm runs were within 10 ms of the start-up"
        print(f"Warm rescan vs cold: whole process {whole}; {detail}")

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


FLOOR = "hashlib sha256 floor"
ONE = "codeintegrity --jobs 1"
TWO = "codeintegrity --jobs 2"
LOCAL = "codeintegrity --dask local:2 (cluster start incl.)"
COLD = "codeintegrity cold results cache"
WARM = "codeintegrity warm results cache"
START = "codeintegrity on an empty folder (start-up)"
LINKED = "codeintegrity --jobs 1, the copies as hard links"
SPIN_ONE = "CPU-bound loop, one process"
SPIN_TWO = "CPU-bound loop, two processes at once"


def osslsigncode(corpus: Path) -> float:
    started = time.perf_counter()
    for path in corpus.iterdir():
        subprocess.run(
            ["osslsigncode", "verify", "-in", str(path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
    return time.perf_counter() - started


def _ratios(numerators: list[float], denominators: list[float]) -> list[float]:
    return [n / d for n, d in zip(numerators, denominators, strict=True)]


def _median_range(values: list[float]) -> str:
    low, high = min(values), max(values)
    if len(values) == 1 or high - low < 0.005:
        return f"{statistics.median(values):.2f}x"
    return f"{statistics.median(values):.2f}x ({low:.2f}-{high:.2f})"


def small_tree(folder: Path, count: int) -> Path:
    """``count`` tiny files that start with MZ (malformed PEs: each is judged and reported)."""
    for i in range(count):
        sub = folder / f"d{i // 1000:03d}"
        if i % 1000 == 0:
            sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i:06d}.exe").write_bytes(b"MZ" + bytes(62))
    return folder


def dask_cluster_rows(cmd: list[str], tree: Path, env: dict[str, str]) -> list[tuple[str, float]]:
    """The tree on a cluster already running (`dask scheduler` and 2 `dask worker --nthreads
    1` processes started here): its first run (workers import the engine, caches cold) and a
    second one (warm workers). Once each: a cluster's first run is a first run only once."""
    import socket

    rows = []
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


def print_table(title: str, times: dict[str, list[float]]) -> None:
    """Median seconds (and range) of each row; its ratio to the floor and to --jobs 1 is the
    median of the ratios within each round."""
    print(f"\n{title}")
    print(f"{'':52} {'seconds (range)':>18} {'x floor':>8} {'vs --jobs 1':>24}")
    for name, seconds in times.items():
        median = statistics.median(seconds)
        spread = f"{median:.2f} ({min(seconds):.2f}-{max(seconds):.2f})"
        floor = statistics.median(_ratios(seconds, times[FLOOR]))
        versus = _median_range(_ratios(times[ONE], seconds))
        print(f"{name:52} {spread:>18} {floor:8.1f} {versus:>24}")


if __name__ == "__main__":
    main()
