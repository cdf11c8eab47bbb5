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


def markdown(runs: Counter[str], seconds: Counter[str]) -> str:
    lines = ["| target | executions | fuzzing time |", "|---|---:|---:|"]
    lines += [f"| `{t}` | {runs[t]:,} | {seconds[t] / 60:.0f} min |" for t in sorted(runs)]
    lines.append(f"| all | {sum(runs.values()):,} | {sum(seconds.values()) / 60:.0f} min |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    runs, seconds = totals(RUNS.read_text() if RUNS.exists() else "")
    if argv == ["--markdown"]:
        print(markdown(runs, seconds))
        return 0
    for target in sorted(runs):
        print(f"{target:12} {runs[target]:>12,} executions  {seconds[target]:>7,} s")
    print(f"{'total':12} {sum(runs.values()):>12,} executions")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
