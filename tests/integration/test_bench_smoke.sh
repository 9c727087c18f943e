#!/usr/bin/env bash
# Smoke run of the benchmark (scripts/bench with tools/loadgen): a few
# hundred requests through its own broker, PostgreSQL, simulator and worker,
# built in the build directory under test. Asserts only that every request
# completed and the worker stopped cleanly; no timing (it is a benchmark,
# not a test: the figures are printed, never judged).
# usage: test_bench_smoke.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1 src=$2
work=$build/bench-smoke
rm -rf "$work"
out=$("$src/scripts/bench" --build-dir "$build" --no-build --work-dir "$work" \
    --requests 300 --latency-ms 5 --no-csv --label smoke 2>&1) || {
    echo "$out"
    echo "FAIL: scripts/bench exited non-zero" >&2
    exit 1
}
echo "$out"
result=$(grep '^RESULT ' <<<"$out") || { echo "FAIL: no RESULT line" >&2; exit 1; }
grep -q ' completed=300 ' <<<"$result" || { echo "FAIL: not every request completed" >&2; exit 1; }
grep -q ' missing=0 ' <<<"$result" || { echo "FAIL: requests missing" >&2; exit 1; }
echo "PASS: 300 of 300 requests completed"
