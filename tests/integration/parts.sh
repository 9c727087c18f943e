#!/usr/bin/env bash
# The integration fixture: starts (or stops) the real parts the integration
# tests talk to, each on a free loopback port:
#   PostgreSQL (initdb + pg_ctl as the postgres user), the dev broker
#   (librdkafka's mock cluster), the channel simulator, and nginx in front
#   of it with TLS (HTTP/2 and HTTP/1.1), h2c and plain HTTP listeners and
#   a CA made for this run (dw_tls_start in scripts/lib/common.sh).
# Their addresses go to DIR/parts.env, read by tests/integration/itest.c.
# usage: parts.sh start|stop|pg-stop|pg-start DIR BUILD_DIR
set -euo pipefail
cmd=$1 dir=$2 build=$3
. "$(dirname "$0")/../../scripts/lib/common.sh"

start_bg() { # start_bg NAME LOGFILE CMD... ; detached, pid in DIR/NAME.pid
    local name=$1 log=$2; shift 2
    setsid "$@" >"$log" 2>"$dir/$name.err" </dev/null &
    echo $! >"$dir/$name.pid"
}

wait_line() { # wait_line FILE REGEX SECONDS: prints the first match
    local file=$1 re=$2 secs=$3 i=0 line
    while [ $i -lt $((secs * 10)) ]; do
        line=$(grep -m1 -E "$re" "$file" 2>/dev/null || true)
        [ -n "$line" ] && { echo "$line"; return 0; }
        sleep 0.1; i=$((i + 1))
    done
    return 1
}

stop_all() {
    for name in broker sim; do
        if [ -f "$dir/$name.pid" ]; then
            kill "$(cat "$dir/$name.pid")" 2>/dev/null || true
            rm -f "$dir/$name.pid"
        fi
    done
    dw_tls_stop "$dir/tls"
    dw_pg_stop "$dir/pg"
}

case $cmd in
start)
    stop_all 2>/dev/null || true
    mkdir -p "$dir"
    chmod 755 "$dir"
    dsn=$(dw_pg_start "$dir/pg")

    start_bg broker "$dir/broker.out" "$build/tools/dev-broker" --partitions 6
    line=$(wait_line "$dir/broker.out" '^bootstrap ' 20) || { cat "$dir/broker.err" >&2; dw_die "dev broker did not start"; }
    brokers=${line#bootstrap }

    start_bg sim "$dir/sim.out" "$build/tools/channel-sim" --port 0
    line=$(wait_line "$dir/sim.out" '^listening on ' 20) || { cat "$dir/sim.err" >&2; dw_die "channel simulator did not start"; }
    sim="http://${line#listening on }"
    tls=$(dw_tls_start "$dir/tls" "${sim##*:}") || dw_die "nginx did not start"

    cat >"$dir/parts.env" <<ENV
PG_DSN=$dsn
PG_DIR=$dir/pg
BROKERS=$brokers
BROKER_PID=$(cat "$dir/broker.pid")
SIM_URL=$sim
SIM_PID=$(cat "$dir/sim.pid")
$tls
TLS_ACCESS_LOG=$dir/tls/access.log
WORKER_BIN=$build/distribution-worker
SOURCE_DIR=$DW_ROOT
ENV
    cat "$dir/parts.env"
    ;;
stop)
    stop_all
    ;;
pg-stop | pg-start) # for fault tests: the same server, same port and data
    dw_pg_ctl "$dir/pg" "${cmd#pg-}"
    ;;
pg-freeze | pg-thaw) # a server that stops answering: SIGSTOP every process of it
    pm=$(head -n 1 "$dir/pg/data/postmaster.pid") || dw_die "no postmaster.pid under $dir/pg/data"
    sig=STOP
    [ "$cmd" = pg-thaw ] && sig=CONT
    # The postmaster and its children (backends, background workers), by pid.
    kill -s "$sig" "$pm" $(ps -o pid= --ppid "$pm") || dw_die "cannot $cmd PostgreSQL ($pm)"
    ;;
*)
    dw_die "usage: parts.sh start|stop|pg-stop|pg-start|pg-freeze|pg-thaw DIR BUILD_DIR"
    ;;
esac
