# Shared shell functions for scripts/run, scripts/test and scripts/bench.
# Source it; every function is prefixed dw_. Nothing here runs on its own.

DW_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

# Debian packages the project builds and runs with.
DW_PACKAGES="build-essential cmake pkg-config clang clang-format libclang-rt-14-dev \
librdkafka-dev libpq-dev libcurl4-openssl-dev libjson-c-dev libconfig-dev \
libcmocka-dev libmicrohttpd-dev postgresql postgresql-client curl procps jq gnuplot-nox \
yamllint python3-yaml graphviz time"

dw_say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
dw_die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Installs whatever of DW_PACKAGES is missing (apt-get update first). Needs root.
dw_install_deps() {
    local missing=""
    for p in $DW_PACKAGES; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
    done
    [ -z "$missing" ] && return 0
    [ "$(id -u)" = 0 ] || dw_die "missing Debian packages:$missing (run as root, or install them)"
    dw_say "installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || dw_die "apt-get update failed"
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null || dw_die "apt-get install failed"
}

# dw_build DIR [cmake args...]: configures (once) and builds into DIR.
dw_build() {
    local dir=$1; shift
    if [ ! -f "$dir/CMakeCache.txt" ]; then
        cmake -S "$DW_ROOT" -B "$dir" "$@" >/dev/null || dw_die "cmake configure failed ($dir)"
    fi
    cmake --build "$dir" -j"$(nproc)" -- --no-print-directory >&2 || dw_die "build failed ($dir)"
}

# A TCP port nobody listens on now.
dw_free_port() {
    python3 - <<'PY' 2>/dev/null || shuf -i 20000-60000 -n 1
import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()
PY
}

# Waits until host:port accepts TCP connections (up to $2 seconds).
dw_wait_port() {
    local port=$1 secs=${2:-30} i=0
    while ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        i=$((i + 1)); [ $i -gt $((secs * 10)) ] && return 1
        sleep 0.1
    done
    return 0
}

# PostgreSQL binaries of the installed server version.
dw_pg_bindir() {
    local d
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [ -n "$d" ] || dw_die "PostgreSQL server binaries not found (package postgresql)"
    echo "$d"
}

# Runs a command as the postgres user when we are root (initdb refuses root).
dw_as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# dw_pg_start DIR: a throwaway server in DIR on a free port, socket in DIR.
# Prints the DSN of database "distribution". Stop it with dw_pg_stop DIR.
dw_pg_start() {
    local dir=$1 bin port
    bin=$(dw_pg_bindir)
    port=$(dw_free_port)
    rm -rf "$dir"; mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres:postgres "$dir"
    dw_as_pg "$bin/initdb" -D "$dir/data" -U postgres -A trust --no-sync >"$dir/initdb.log" 2>&1 ||
        { cat "$dir/initdb.log" >&2; dw_die "initdb failed"; }
    # Settings live in the data directory, so a plain pg_ctl start (after a
    # stop in a fault test) comes back on the same port.
    cat >>"$dir/data/postgresql.conf" <<CONF
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
CONF
    dw_pg_ctl "$dir" start || { cat "$dir/server.log" >&2; dw_die "PostgreSQL did not start"; }
    dw_as_pg "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres distribution ||
        dw_die "createdb failed"
    echo "$port" >"$dir/port"
    echo "postgresql://postgres@127.0.0.1:$port/distribution"
}

# dw_pg_ctl DIR start|stop: the server dw_pg_start made in DIR.
dw_pg_ctl() {
    local dir=$1 action=$2
    case $action in
    start) dw_as_pg "$(dw_pg_bindir)/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null ;;
    stop) dw_as_pg "$(dw_pg_bindir)/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null ;;
    esac
}

dw_pg_stop() {
    local dir=$1
    [ -d "$dir/data" ] || return 0
    dw_as_pg "$(dw_pg_bindir)/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
}
