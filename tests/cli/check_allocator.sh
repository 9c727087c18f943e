#!/usr/bin/env bash
# The daemon runs on the allocator its build chose (CMake's DW_MALLOC, or
# the sanitizer's own): with mimalloc, libmimalloc is among the libraries
# it loads and its malloc is the one every library calls; with the
# system's, it is not loaded at all.
#   check_allocator.sh BINARY mimalloc|system
set -euo pipefail
bin=$1 want=$2

# The library, resolved as the loader would resolve it for this binary.
lib=$(ldd "$bin" | awk '/libmimalloc/ {print $3}')
case $want in
mimalloc)
    [ -n "$lib" ] || { echo "FAIL: $bin does not load libmimalloc"; ldd "$bin"; exit 1; }
    # Loaded is not enough: malloc must resolve to it, not to libc. The
    # loader's symbol bindings say where each library's malloc went.
    binding=$(LD_DEBUG=bindings "$bin" --version 2>&1 >/dev/null |
        grep -m1 "normal symbol \`malloc'" || true)
    case $binding in
    *libmimalloc*) echo "ok: malloc binds to $lib" ;;
    *) echo "FAIL: malloc does not bind to mimalloc: ${binding:-no binding seen}"; exit 1 ;;
    esac
    ;;
system)
    [ -z "$lib" ] || { echo "FAIL: $bin loads $lib, but its build asked for the system allocator"; exit 1; }
    echo "ok: the system allocator"
    ;;
*)
    echo "usage: check_allocator.sh BINARY mimalloc|system" >&2
    exit 2
    ;;
esac
