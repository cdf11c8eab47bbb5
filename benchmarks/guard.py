"""Benchmark the on-access guard (root: fanotify permission events).

Usage: sudo python benchmarks/guard.py [--opens 20000] [--duration 10] [--firsts 15]

Mounts a private tmpfs under benchmarks/_work/guard (nothing else on the machine is gated),
starts `codeintegrity guard` on it in audit mode (default trust, no event store), and reports:
- open()+close() latency of one PE file with no guard, and with the guard answering from its
  cache: p50 and p99, and the latency the guard adds (targets: <= 50 us p50, <= 1 ms p99);
- the first open of the 24 KB Microsoft-signed demo DLL (a verification with chain validation;
  a fresh copy each time, median; target <= 30 ms);
- cached opens per second sustained for --duration seconds, the guard's RSS before and after,
  and errors (target 10,000/s for 60 s, flat RSS, no errors).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / "_work" / "guard"
DEMO = ROOT / "src" / "codeintegrity" / "data" / "demo_signed.dll"


def _latencies(path: Path, count: int) -> list[float]:
    """open()+close() of ``path``, ``count`` times, in microseconds."""
    name = str(path)
    out = []
    clock = time.perf_counter_ns
    for _ in range(count):
        start = clock()
        os.close(os.open(name, os.O_RDONLY))
        out.append((clock() - start) / 1000)
    return out


def _pct(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--opens", type=int, default=20000)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--firsts", type=int, default=15)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("benchmarks/guard.py needs root (fanotify permission events)", file=sys.stderr)
        return 2
    mnt = WORK / "mnt"
    mnt.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mnt)], check=True)
    guard = None
    try:
        target = mnt / "cached.dll"
        shutil.copyfile(DEMO, target)
        for index in range(args.firsts):
            shutil.copyfile(DEMO, mnt / f"first{index}.dll")
        _latencies(target, 1000)  # warm the dentry and page caches
        bare = _latencies(target, args.opens)
        guard = subprocess.Popen(
            [sys.executable, "-m", "codeintegrity", "guard", str(mnt), "--mode", "audit",
             "--no-store", "--control-socket", "none"],
            stderr=subprocess.PIPE, text=True, cwd=ROOT,
        )  # fmt: skip
        assert guard.stderr is not None
        for line in guard.stderr:
            if "ready" in line:
                break
        else:
            print("the guard did not start", file=sys.stderr)
            return 1
        firsts = [_latencies(mnt / f"first{i}.dll", 1)[0] / 1000 for i in range(args.firsts)]
        _latencies(target, 1000)  # the verdict is now cached
        guarded = _latencies(target, args.opens)
        rss_before = _rss_kb(guard.pid)
        done, errors, end = 0, 0, time.monotonic() + args.duration
        name = str(target)
        started = time.monotonic()
        while time.monotonic() < end:
            for _ in range(1000):
                try:
                    os.close(os.open(name, os.O_RDONLY))
                except OSError:
                    errors += 1
            done += 1000
        rate = done / (time.monotonic() - started)
        rss_after = _rss_kb(guard.pid)
    finally:
        if guard is not None:
            guard.terminate()
            guard.wait(30)
        subprocess.run(["umount", "-l", str(mnt)], check=False)
    b50, b99 = _pct(bare, 0.5), _pct(bare, 0.99)
    g50, g99 = _pct(guarded, 0.5), _pct(guarded, 0.99)
    first = statistics.median(firsts)
    print(f"open+close, no guard:       p50 {b50:8.1f} us   p99 {b99:8.1f} us")
    print(f"open+close, cached verdict: p50 {g50:8.1f} us   p99 {g99:8.1f} us")
    print(
        f"added by the guard:         p50 {g50 - b50:8.1f} us ({(g50 - b50) / 50:.2f}x the 50 us "
        f"target)   p99 {g99 - b99:8.1f} us ({(g99 - b99) / 1000:.2f}x the 1 ms target)"
    )
    print(
        f"first open of the 24 KB signed DLL: median {first:.1f} ms over {len(firsts)} copies "
        f"(min {min(firsts):.1f}, max {max(firsts):.1f}; {first / 30:.2f}x the 30 ms target)"
    )
    print(
        f"sustained cached opens: {rate:,.0f}/s for {args.duration:g} s "
        f"({rate / 10000:.2f}x the 10,000/s target), errors {errors}, "
        f"guard RSS {rss_before / 1024:.1f} -> {rss_after / 1024:.1f} MiB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
