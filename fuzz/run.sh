#!/usr/bin/env bash
# Long fuzzing run of one target:  fuzz/run.sh TARGET SECONDS [extra libFuzzer options]
#
# The corpus grows in fuzz/corpus/TARGET (seeded from tests/data on first use), crashes land
# in fuzz/crashes/TARGET/, and each finished run appends "date target seconds runs" to
# fuzz/runs.tsv (the execution totals in docs/fuzzing.md). Python: $FUZZ_PYTHON, else the
# checkout's .venv, else python3; atheris must be installed (pip install -e ".[fuzz]").
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 2 ]; then
    echo "usage: fuzz/run.sh TARGET SECONDS [libFuzzer options]" >&2
    exit 2
fi
target=$1
seconds=$2
shift 2
python=${FUZZ_PYTHON:-}
if [ -z "$python" ]; then
    if [ -x .venv/bin/python ]; then python=.venv/bin/python; else python=python3; fi
fi
dict=$("$python" -c "from fuzz.dictionary import TARGET_DICTS as d; print(d['$target'])")
corpus=fuzz/corpus/$target
crashes=fuzz/crashes/$target
mkdir -p "$corpus" "$crashes"
if [ -z "$(ls -A "$corpus")" ]; then
    "$python" -m fuzz.seeds "$target" "$corpus"
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
"$python" -m fuzz "$target" \
    -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 \
    -dict="fuzz/dict/$dict" -artifact_prefix="$crashes/" "$@" "$corpus" 2>&1 | tee "$log" \
    || status=$?
runs=$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
if [ -z "$runs" ]; then
    # Stopped by a crash: libFuzzer prints the count in its final stats instead.
    runs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\)/\1/p' "$log" | tail -1)
fi
if [ -z "$runs" ]; then
    # Interrupted: the last status line ("#N ...") is the count.
    runs=$(sed -n 's/^#\([0-9]*\)[[:space:]].*/\1/p' "$log" | tail -1)
fi
printf '%s\t%s\t%s\t%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$target" "$seconds" "${runs:-0}" \
    >> fuzz/runs.tsv
echo "fuzz/run.sh: $target: ${runs:-0} executions (status $status); totals: python -m fuzz.totals"
exit "$status"
