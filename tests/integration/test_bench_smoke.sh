#!/usr/bin/env bash
# Smoke run of the benchmark (scripts/bench with tools/loadgen): a few
# hundred requests through its own broker, PostgreSQL, simulator and worker,
# built in the build directory under test, once over plain HTTP and once
# over HTTPS with HTTP/2 through nginx (scripts/bench --tls --http2). Asserts only that every request
# completed and the worker stopped cleanly; no timing (it is a benchmark,
# not a test: the figures are printed, never judged).
# usage: test_bench_smoke.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1 src=$2
work=$build/bench-smoke
rm -rf "$work"
# Plain HTTP to the simulator, then HTTPS with HTTP/2 through nginx.
for transport in "" "--tls --http2 --host-connections 2"; do
    # shellcheck disable=SC2086
    out=$("$src/scripts/bench" --build-dir "$build" --no-build --work-dir "$work" \
        --requests 300 --latency-ms 5 --no-csv --label smoke $transport 2>&1) || {
        echo "$out"
        echo "FAIL: scripts/bench $transport exited non-zero" >&2
        exit 1
    }
    echo "$out"
    result=$(grep '^RESULT ' <<<"$out") || { echo "FAIL: no RESULT line" >&2; exit 1; }
    grep -q ' completed=300 ' <<<"$result" || { echo "FAIL: not every request completed" >&2; exit 1; }
    grep -q ' missing=0 ' <<<"$result" || { echo "FAIL: requests missing" >&2; exit 1; }
    if [ -n "$transport" ]; then
        grep -qE 'connections opened \(nginx log\) +[0-9]+ .*HTTP/2.0 2100' <<<"$out" ||
            { echo "FAIL: the calls did not all go over HTTP/2 through nginx" >&2; exit 1; }
    fi
    echo "PASS: 300 of 300 requests completed ${transport:-(plain HTTP)}"
done
