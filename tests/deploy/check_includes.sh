#!/usr/bin/env bash
# The dependency lines of docs/design.md ("Modules and their dependencies"):
# no file of src/ or include/dw/ includes, directly or through the headers it
# includes, a header across a forbidden line.
#   guards   (src/resilience/, their headers): no adapter, store or Kafka header
#   adapters (src/channels/, dw/channel.h):    no store, guard or Kafka header
#   store    (src/store.c and the files it shares store_internal.h with,
#             dw/store.h):                      no adapter header
#   intake   (src/intake.c, dw/intake.h):       no store, adapter or librdkafka
#                                               header (main.c hands it records)
#   dispatch (src/dispatch*.c, dw/dispatch.h):  no Kafka header but the
#                                               producer's (completions)
#   metrics (src/metrics*.c, dw/metrics.h), log:
#                                               no domain header (only the
#                                               leaves common.h, status.h,
#                                               channel_id.h, utf8.h)
#   the libraries out of the rule files (json_scan, rfc3339, backoff,
#   pgarray, peak):                             no domain header either
#   vocabulary (channel_id):                    no dw/ header at all
# usage: check_includes.sh SOURCE_DIR
set -euo pipefail
root=$1
cd "$root"

adapter='dw/channel.h channel_internal.h'
store='dw/store.h libpq-fe.h'
guard='dw/breaker.h dw/bulkhead.h dw/guard.h dw/limit.h dw/pace.h dw/ratelimit.h dw/retry.h'
kafka='librdkafka/rdkafka.h dw/consumer.h dw/producer.h dw/kafka_conf.h dw/backlog.h dw/tracker.h'
leaves='dw/common.h dw/status.h dw/channel_id.h dw/utf8.h'

# Known exceptions, "file header" pairs allowed although a rule forbids them
# (none today; metrics.h took enum dw_breaker_state from breaker.h until the
# breaker pushed its numbers in the metrics' own words, issue 13 item 4).
exceptions=''

# The file an include names, when it is one of ours; "" for a system header.
resolve() { # from_file include
    local path
    case $2 in
    dw/*) path=include/$2 ;;
    *) path=$(dirname "$1")/$2 ;;
    esac
    if [ -f "$path" ]; then echo "$path"; fi
}

# Every header a file includes, directly or not: lines "via-file header".
declare -A seen
closure() { # file
    local inc file
    while read -r inc; do
        [ -n "${seen[$inc]:-}" ] && continue
        seen[$inc]=1
        echo "$1 $inc"
        file=$(resolve "$1" "$inc")
        if [ -n "$file" ]; then closure "$file"; fi
    done < <(sed -nE 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*[<"]([^">]+)[">].*/\1/p' "$1")
}

fails=0
check() { # rule-name forbidden-list files... ("-" list: all but leaves)
    local rule=$1 forbidden=$2 f via inc bad
    shift 2
    for f in "$@"; do
        own=dw/$(basename "$f" .c) # src/log.c and include/dw/log.h: dw/log.h
        own=${own%.h}.h
        seen=()
        while read -r via inc; do
            [ "$inc" = "$own" ] && continue
            case " ${allow:-} " in *" $inc "*) continue ;; esac # the module's own headers
            case " $exceptions " in *" $via $inc "*) continue ;; esac
            if [ "$forbidden" = "-" ]; then
                bad=0
                case $inc in dw/*) case " $leaves " in *" $inc "*) ;; *) bad=1 ;; esac ;; esac
            else
                case " $forbidden " in *" $inc "*) bad=1 ;; *) bad=0 ;; esac
            fi
            if [ $bad = 1 ]; then
                if [ "$via" = "$f" ]; then
                    echo "$f includes $inc: $rule" >&2
                else
                    echo "$f includes $inc (through $via): $rule" >&2
                fi
                fails=$((fails + 1))
            fi
        done < <(closure "$f")
    done
}

guard_files=(src/resilience/*.c)
for h in $guard; do guard_files+=("include/$h"); done
check "a guard includes no adapter, store or Kafka header" \
    "$adapter $store $kafka" "${guard_files[@]}"
check "an adapter includes no store, guard or Kafka header" \
    "$store $guard $kafka" src/channels/*.c src/channels/*.h include/dw/channel.h
store_files=(include/dw/store.h src/store_internal.h src/store_dsn.c
    $(grep -l '#include "store_internal.h"' src/*.c))
check "the store includes no adapter header" "$adapter" "${store_files[@]}"
check "intake includes no store, adapter or librdkafka header" \
    "$adapter $store librdkafka/rdkafka.h" src/intake.c include/dw/intake.h
check "dispatch includes no Kafka header but the producer's" \
    "${kafka/dw\/producer.h/}" src/dispatch*.c src/dispatch_internal.h include/dw/dispatch.h
allow="dw/metrics.h metrics_internal.h" check "metrics include no domain header" - \
    src/metrics*.c src/metrics_internal.h include/dw/metrics.h
check "the log includes no domain header" - src/log.c include/dw/log.h
check "the channel vocabulary is a leaf" - src/channel_id.c include/dw/channel_id.h
for lib in json_scan rfc3339 backoff pgarray peak; do
    check "the $lib library includes no domain header" - src/$lib.c include/dw/$lib.h
done
[ -z "$(sed -nE 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"(dw\/[^"]+)".*/\1/p' \
    include/dw/channel_id.h)" ] ||
    { echo "include/dw/channel_id.h includes a dw/ header: the vocabulary is a leaf" >&2; fails=$((fails + 1)); }

[ $fails = 0 ] || { echo "$fails forbidden include(s); see docs/design.md" >&2; exit 1; }
echo "include lines OK"
