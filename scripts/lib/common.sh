# Shared shell functions for scripts/run, scripts/test and scripts/bench.
# Source it; every function is prefixed dw_. Nothing here runs on its own.

DW_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

# Debian packages the project builds and runs with.
DW_PACKAGES="build-essential cmake pkg-config clang clang-format libclang-rt-14-dev \
librdkafka-dev libpq-dev libcurl4-openssl-dev libjson-c-dev libconfig-dev \
libcmocka-dev libmicrohttpd-dev libmimalloc-dev postgresql postgresql-client curl procps jq gnuplot-nox \
yamllint python3-yaml graphviz time nginx openssl"

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

# ---- TLS in front of the channel simulator ----

# dw_tls_certs DIR: a throwaway CA (DIR/ca.pem) and a server certificate for
# the name "localhost" only (DIR/server.pem, DIR/server.key), made with
# openssl for each run. Calls to https://localhost:PORT verify against
# DIR/ca.pem; calls to https://127.0.0.1:PORT fail the host-name check.
dw_tls_certs() {
    local dir=$1
    mkdir -p "$dir"
    printf 'subjectAltName=DNS:localhost\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' >"$dir/server.ext"
    {
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
            -keyout "$dir/ca.key" -out "$dir/ca.pem" -subj "/CN=distribution-worker test CA" \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" &&
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -keyout "$dir/server.key" -out "$dir/server.csr" -subj "/CN=localhost" &&
        openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
            -CAcreateserial -days 2 -extfile "$dir/server.ext" -out "$dir/server.pem"
    } >"$dir/openssl.log" 2>&1 || { cat "$dir/openssl.log" >&2; dw_die "openssl could not make the test certificates"; }
}

# dw_tls_start DIR SIM_PORT [WORKERS]: nginx (Debian's) in front of the
# channel simulator on 127.0.0.1:SIM_PORT, with its own prefix, pid file,
# logs and temp directories in DIR, on four free loopback ports:
#   TLS_H2_PORT  TLS with HTTP/2 offered (ALPN h2, http/1.1)
#   TLS_H1_PORT  TLS, HTTP/1.1 only
#   H2C_PORT     plain HTTP/2 with prior knowledge (h2c)
#   H1_PORT      plain HTTP/1.1
# Each proxies to the simulator over kept-alive HTTP/1.1 connections.
# DIR/access.log has one line per call: port, protocol, connection serial
# number, requests on it so far, status, Idempotency-Key, and "r" where
# the TLS session was resumed ("." where not, "" without TLS). Prints NAME=value lines (the four
# ports, TLS_CA_FILE, NGINX_PID). Stop it with dw_tls_stop DIR.
dw_tls_start() {
    local dir=$1 sim_port=$2 workers=${3:-1} name
    command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || dw_die "nginx is missing (Debian package nginx)"
    dw_tls_stop "$dir" 2>/dev/null || true
    mkdir -p "$dir/tmp" "$dir/logs"
    # Started as root, nginx's workers run as nobody: let them write temp files.
    chmod 1777 "$dir/tmp"
    dw_tls_certs "$dir"
    local -A port
    for name in TLS_H2_PORT TLS_H1_PORT H2C_PORT H1_PORT; do port[$name]=$(dw_free_port); done
    local proxy="location / { proxy_pass http://sim; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_set_header Host \$host; }"
    cat >"$dir/nginx.conf" <<CONF
# Made by dw_tls_start (scripts/lib/common.sh) for one run.
daemon on;
worker_processes $workers;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections 8192; }
http {
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    log_format calls '\$server_port \$server_protocol \$connection \$connection_requests \$status \$http_idempotency_key \$ssl_session_reused';
    access_log $dir/access.log calls buffer=64k flush=1s;
    # Connections live as long as the worker keeps them: a test or a bench
    # run counts the connections the worker opens, not the ones nginx closes.
    keepalive_requests 10000000;
    keepalive_timeout 600s;
    http2_max_concurrent_streams 256;
    ssl_certificate $dir/server.pem;
    ssl_certificate_key $dir/server.key;
    ssl_session_cache shared:dwtls:10m;
    upstream sim { server 127.0.0.1:$sim_port; keepalive 512; keepalive_requests 10000000; }
    server { listen 127.0.0.1:${port[TLS_H2_PORT]} ssl http2; $proxy }
    server { listen 127.0.0.1:${port[TLS_H1_PORT]} ssl; $proxy }
    server { listen 127.0.0.1:${port[H2C_PORT]} http2; $proxy }
    server { listen 127.0.0.1:${port[H1_PORT]}; $proxy }
}
CONF
    local bin
    bin=$(command -v nginx || echo /usr/sbin/nginx)
    "$bin" -p "$dir" -c "$dir/nginx.conf" -e "$dir/logs/error.log" 2>"$dir/logs/start.log" ||
        { cat "$dir/logs/start.log" "$dir/logs/error.log" >&2 2>/dev/null; dw_die "nginx did not start"; }
    for name in TLS_H2_PORT TLS_H1_PORT H2C_PORT H1_PORT; do
        dw_wait_port "${port[$name]}" 10 || dw_die "nginx does not listen on ${port[$name]}"
        echo "$name=${port[$name]}"
    done
    echo "TLS_CA_FILE=$dir/ca.pem"
    echo "NGINX_PID=$(cat "$dir/nginx.pid")"
}

dw_tls_stop() {
    local dir=$1 pid i
    [ -f "$dir/nginx.pid" ] || return 0
    pid=$(cat "$dir/nginx.pid")
    # QUIT: a graceful stop, which writes out the buffered access log.
    kill -QUIT "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$dir/nginx.pid"
}
