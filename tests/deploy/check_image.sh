#!/usr/bin/env bash
# The container image, checked without a Docker engine.
#
# 1. The Dockerfile's shape: two stages (bookworm to build, bookworm-slim to
#    run), a non-root numeric USER, STOPSIGNAL SIGTERM, HEALTHCHECK NONE,
#    the config file at its fixed path, no -dev package in the runtime stage.
# 2. Every shared library the built binary loads (`ldd`) belongs to a Debian
#    package (`dpkg -S`) that the runtime stage installs, or that one of
#    those depends on (recursively, as dpkg records it), or that the base
#    image has (Priority: required). A library the binary links directly
#    (ELF NEEDED) must come from a package the runtime stage names itself,
#    or from the base image: relying on another package's dependency for a
#    direct link would break when that package changes.
#
# usage: check_image.sh BINARY DOCKERFILE
set -euo pipefail
bin=$1 dockerfile=$2
fails=0
fail() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }
ok() { echo "ok: $*"; }
# check WHAT CMD...: ok WHAT when CMD succeeds, else fail with WHAT.
check() {
    local what=$1; shift
    if "$@"; then ok "$what"; else fail "$what"; fi
}

[ -x "$bin" ] || { echo "no binary at $bin" >&2; exit 1; }
[ -f "$dockerfile" ] || { echo "no Dockerfile at $dockerfile" >&2; exit 1; }
command -v dpkg-query >/dev/null || { echo "dpkg-query not found: a Debian machine is needed" >&2; exit 1; }

# ---- 1. the Dockerfile's shape ----

# Instructions with continuation lines joined and comments dropped.
joined=$(sed -e 's/[[:space:]]*#.*$//' "$dockerfile" | awk '
    /\\$/ { sub(/\\$/, ""); line = line $0 " "; next }
    { print line $0; line = "" }' | grep -v '^[[:space:]]*$')
froms=$(grep -ciE '^FROM ' <<<"$joined" || true)
check "two stages (FROM lines: $froms)" [ "$froms" = 2 ]
check "build stage: FROM debian:bookworm AS build" grep -qiE '^FROM +debian:bookworm +AS +build' <<<"$joined"
# The runtime stage: everything after the last FROM.
runtime=$(awk 'toupper($1) == "FROM" { buf = "" } { buf = buf $0 "\n" } END { printf "%s", buf }' <<<"$joined")
check "runtime stage: FROM debian:bookworm-slim" grep -qiE '^FROM +debian:bookworm-slim' <<<"$runtime"
user=$(grep -iE '^USER ' <<<"$runtime" | tail -n 1 | awk '{print $2}')
uid=${user%%:*}
if [[ "$uid" =~ ^[0-9]+$ ]] && [ "$uid" != 0 ]; then ok "non-root numeric USER $user"
else fail "the runtime stage needs USER with a numeric non-zero uid (found '${user:-none}')"; fi
check "STOPSIGNAL SIGTERM" grep -qiE '^STOPSIGNAL +SIGTERM' <<<"$runtime"
if grep -iE '^HEALTHCHECK' <<<"$runtime" | grep -qviE '^HEALTHCHECK +NONE'; then
    fail "a HEALTHCHECK other than NONE: Kubernetes probes do that"
else ok "no HEALTHCHECK"; fi
conf=/etc/distribution-worker/distribution-worker.conf
check "config copied to $conf" grep -qE "^COPY .* $conf\$" <<<"$runtime"
check "CMD runs with -c $conf" grep -qE "^CMD .*\"$conf\"" <<<"$runtime"

# Packages the runtime stage installs (words after "apt-get install" that
# are not options, up to the next && or ;).
installed=$(grep -iE 'apt-get +install' <<<"$runtime" |
    sed -E 's/.*apt-get +install//; s/(&&|;).*//' | tr ' ' '\n' | grep -vE '^(-.*)?$' | sort -u)
[ -n "$installed" ] || fail "the runtime stage installs no packages"
dev=$(grep -E -- '-dev$' <<<"$installed" || true)
check "no -dev package at run time${dev:+: }$(tr '\n' ' ' <<<"$dev")" [ -z "$dev" ]
echo "runtime stage installs: $(tr '\n' ' ' <<<"$installed")"

# ---- 2. the binary's libraries ----

# The package owning a library file; usrmerge means it may be recorded under
# /lib or /usr/lib, by the resolved or the given path.
owner() {
    local f=$1 real alt p
    real=$(readlink -f "$f")
    for p in "$f" "$real"; do
        case $p in
        /usr/lib/*) alt=${p#/usr} ;;
        /lib/*) alt=/usr$p ;;
        *) alt=$p ;;
        esac
        for q in "$p" "$alt"; do
            dpkg -S "$q" 2>/dev/null | head -n 1 | cut -d: -f1 && return 0
        done
    done
    return 1
}

# The dependency closure of some packages, as dpkg records it for the
# installed versions (offline; no apt lists needed). Prints one a line.
closure_of() {
    local -A seen=()
    local queue=("$@") p d deps
    while [ ${#queue[@]} -gt 0 ]; do
        p=${queue[0]}
        queue=("${queue[@]:1}")
        [ -n "${seen[$p]:-}" ] && continue
        seen[$p]=1
        echo "$p"
        deps=$(dpkg-query -W -f='${Pre-Depends}, ${Depends}\n' "$p" 2>/dev/null || true)
        for d in $(tr ',|' '\n' <<<"$deps" | sed -E 's/\(.*\)//; s/:any//; s/^ +//; s/ +$//' | grep -v '^$'); do
            [ -n "${seen[$d]:-}" ] || queue+=("$d")
        done
    done
    return 0
}

# The base image (bookworm-slim): Debian's essential and required packages
# and what they depend on (libc6 among them).
# shellcheck disable=SC2046
base=$(closure_of $(dpkg-query -W -f='${Package} ${Essential} ${Priority}\n' |
    awk '$2 == "yes" || $3 == "required" {print $1}') | sort -u)
# shellcheck disable=SC2086
deps=$(closure_of $installed | sort -u)

direct=$(readelf -d "$bin" 2>/dev/null | sed -nE 's/.*\(NEEDED\).*\[(.*)\]/\1/p')
[ -n "$direct" ] || fail "readelf found no NEEDED entries in $bin"
ldd_out=$(ldd "$bin")
if grep -q 'not found' <<<"$ldd_out"; then
    fail "ldd cannot resolve: $(grep 'not found' <<<"$ldd_out" | tr '\n' ' ')"
fi

printf '%-28s %-22s %s\n' LIBRARY PACKAGE "PROVIDED BY"
while read -r name _ path _; do
    if [ -z "${path:-}" ] || [ ! -f "$path" ]; then continue; fi
    pkg=$(owner "$path") || { fail "$name ($path): no Debian package owns it"; continue; }
    pkg=${pkg%%:*}
    is_direct=0
    grep -qxF "$name" <<<"$direct" && is_direct=1
    if grep -qxF "$pkg" <<<"$installed"; then how="installed by the runtime stage"
    elif grep -qxF "$pkg" <<<"$base"; then how="base image"
    elif grep -qxF "$pkg" <<<"$deps"; then how="dependency of an installed package"
    else how="MISSING"; fi
    [ $is_direct = 1 ] && how="$how, linked directly"
    printf '%-28s %-22s %s\n' "$name" "$pkg" "$how"
    case $how in
    MISSING*) fail "$name comes from $pkg, which the runtime stage does not install" ;;
    "dependency of an installed package, linked directly")
        fail "$name is linked directly but $pkg is only a dependency: name it in the runtime stage" ;;
    esac
done < <(grep '=>' <<<"$ldd_out")

if [ $fails -gt 0 ]; then
    echo "$fails check(s) failed" >&2
    exit 1
fi
echo "image checks passed"
