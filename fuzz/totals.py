"""Sum fuzz/runs.tsv (appended by fuzz/run.sh): executions and seconds per target.

python -m fuzz.totals
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

RUNS = Path(__file__).resolve().parent / "runs.tsv"


def totals(text: str) -> tuple[Counter[str], Counter[str]]:
    runs: Counter[str] = Counter()
    seconds: Counter[str] = Counter()
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        _when, target, spent, count = line.split("\t")
        runs[target] += int(count)
        seconds[target] += int(spent)
    return runs, seconds


def main() -> int:
    runs, seconds = totals(RUNS.read_text() if RUNS.exists() else "")
    for target in sorted(runs):
        print(f"{target:12} {runs[target]:>12,} executions  {seconds[target]:>7,} s")
    print(f"{'total':12} {sum(runs.values()):>12,} executions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
