#!/usr/bin/env bash
# The simulator's capacity faults (docs/simulator.md), checked with curl
# against a channel-sim of its own (no fixture):
#   - capacity 2 with 500 ms latency: of 5 concurrent calls, 2 answer 200
#     and 3 answer 503 at once; overCapacity 3, maxServing 2; served 2,
#     each holding its slot at least the 500 ms (servedMicros), the
#     refused ones none;
#   - capacityStatus 429 with capacityRetryAfter: the refusal is a 429
#     carrying that Retry-After;
#   - latencyKnee: the 6th of 6 concurrent calls with knee 2 is delayed
#     latencyMs * (1 + 4/2), so it takes at least that long (a lower bound
#     only: a busy machine makes calls slower, never faster);
#   - --backlog 1 --accept-rate 2: of 20 connects at once, most cannot
#     connect within 1 s, and the simulator accepted fewer than 20;
#   - the defaults: no capacity, every one of 20 connects accepted;
#   - each simulator exits 0 on SIGTERM (a sanitizer build reports there).
# usage: test_sim_capacity.sh BUILD_DIR
set -euo pipefail
build=$1
sim_bin=$build/tools/channel-sim
work=$(mktemp -d)
sim_pid=""
cleanup() {
    [ -n "$sim_pid" ] && kill "$sim_pid" 2>/dev/null && wait "$sim_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

stop_sim() { # stops the simulator; it must exit 0
    local st=0
    kill "$sim_pid"
    wait "$sim_pid" || st=$?
    sim_pid=""
    [ "$st" = 0 ] || { cat "$work/sim.err" >&2; fail "channel-sim exited with status $st"; }
}

start_sim() { # start_sim ARGS...: sets S (base URL) and sim_pid
    [ -z "$sim_pid" ] || stop_sim
    "$sim_bin" --port 0 --threads 2 "$@" >"$work/sim.out" 2>"$work/sim.err" &
    sim_pid=$!
    for _ in $(seq 1 100); do
        grep -qs "^listening on " "$work/sim.out" && break
        sleep 0.05
    done
    S="http://$(sed -n 's/^listening on //p' "$work/sim.out")"
    [ "$S" != "http://" ] || fail "channel-sim did not start: $(cat "$work/sim.err")"
}

fault() { curl -fsS -o /dev/null -d "$1" "$S/_sim/faults" || fail "fault $1 refused"; }

# calls N PREFIX [CURL ARGS...]: N KAKAO posts at once, one per connection;
# prints "status seconds" per call.
calls() {
    local n=$1 prefix=$2 i
    shift 2
    for ((i = 0; i < n; i++)); do
        curl -s -o /dev/null -w '%{http_code} %{time_total}\n' "$@" \
            -H 'Authorization: Bearer t' -H "Idempotency-Key: $prefix-$i:KAKAO" \
            -H 'Content-Type: application/json' -d '{"title":"x"}' \
            "$S/kakao/v1/api/talk/channels/posts" >"$work/call.$prefix.$i" &
    done
    wait_calls
    cat "$work"/call."$prefix".*
}
wait_calls() { # every background job but the simulator
    local p
    for p in $(jobs -p); do
        [ "$p" = "$sim_pid" ] || wait "$p" || true
    done
}
stat() { curl -fsS "$S/_sim/stats" | jq -r "$1"; }

start_sim

# Capacity 2, 503 beyond.
fault '{"channel":"KAKAO","capacity":2,"latencyMs":500}'
out=$(calls 5 cap)
echo "capacity 2, 5 calls at once:"; echo "$out"
[ "$(grep -c '^200 ' <<<"$out")" = 2 ] || fail "expected two 200s"
[ "$(grep -c '^503 ' <<<"$out")" = 3 ] || fail "expected three 503s"
[ "$(stat .channels.KAKAO.overCapacity)" = 3 ] || fail "overCapacity is not 3"
[ "$(stat .channels.KAKAO.maxServing)" = 2 ] || fail "maxServing is not 2"
# A call counts as served when the simulator has finished it, which may be
# a moment after curl has read the answer.
for _ in $(seq 1 40); do
    [ "$(stat .channels.KAKAO.served)" = 2 ] && break
    sleep 0.05
done
[ "$(stat .channels.KAKAO.served)" = 2 ] || fail "served is not 2"
[ "$(stat .channels.KAKAO.servedMicros)" -ge 1000000 ] || fail "servedMicros below 2 x 500 ms"
[ "$(stat .channels.KAKAO.connectionsOpened)" = 5 ] || fail "connectionsOpened is not 5"
[ "$(stat .connectionsAccepted)" -ge 5 ] || fail "connectionsAccepted below 5"

# The same with 429 and a Retry-After.
fault '{"channel":"KAKAO","capacity":1,"capacityStatus":429,"capacityRetryAfter":7,"latencyMs":500}'
curl -s -o /dev/null -H 'Authorization: Bearer t' -H 'Idempotency-Key: hold:KAKAO' \
    -H 'Content-Type: application/json' -d '{"title":"x"}' \
    "$S/kakao/v1/api/talk/channels/posts" &
sleep 0.2 # the first call holds the only slot for 500 ms
head=$(curl -s -D - -o /dev/null -H 'Authorization: Bearer t' -H 'Idempotency-Key: over:KAKAO' \
    -H 'Content-Type: application/json' -d '{"title":"x"}' "$S/kakao/v1/api/talk/channels/posts")
wait_calls
echo "$head" | head -1
grep -q '^HTTP/1.1 429' <<<"$head" || fail "expected a 429 beyond capacity"
grep -qi '^Retry-After: 7' <<<"$head" || fail "expected Retry-After: 7"

# Latency that grows with load: 100 ms, knee 2; the 6th call at once gets
# 100 * (1 + (6 - 2) / 2) = 300 ms.
fault '{"channel":"KAKAO","capacity":0,"latencyMs":100,"latencyKnee":2}'
out=$(calls 6 knee)
echo "latency 100 ms, knee 2, 6 calls at once:"; echo "$out"
[ "$(grep -c '^200 ' <<<"$out")" = 6 ] || fail "expected six 200s"
slowest=$(awk '{ print $2 }' <<<"$out" | sort -n | tail -1)
awk -v s="$slowest" 'BEGIN { exit !(s >= 0.29) }' || fail "the slowest call took $slowest s, not 300 ms or more"

# Defaults: 20 connects at once are all accepted.
fault '{"channel":"KAKAO","latencyMs":0,"latencyKnee":0}'
curl -fsS -o /dev/null -X POST "$S/_sim/reset-counters"
out=$(calls 20 plain --connect-timeout 1)
[ "$(grep -c '^200 ' <<<"$out")" = 20 ] || fail "with the defaults, not every call succeeded"

# A slow listener: backlog 1, 2 accepts per second.
start_sim --backlog 1 --accept-rate 2
out=$(calls 20 slow --connect-timeout 1)
ok=$(grep -c '^200 ' <<<"$out" || true)
accepted=$(stat .connectionsAccepted)
echo "backlog 1, 2 accepts/s, 20 connects at once: $ok answered, $accepted accepted"
[ "$ok" -le 10 ] || fail "$ok of 20 calls got through a listener that accepts 2 per second"
[ "$accepted" -lt 20 ] || fail "all 20 connections were accepted"
stop_sim

echo "PASS"
