#!/usr/bin/env bash
# The architecture picture: docs/architecture.dot parses with graphviz and
# its rendering docs/architecture.png is there and not older than it.
# Re-render after editing the source:
#   dot -Tpng -Gdpi=110 docs/architecture.dot -o docs/architecture.png
# usage: check_architecture.sh SOURCE_DIR
set -euo pipefail
docs=$1/docs
command -v dot >/dev/null ||
    { echo "dot not found: Debian package graphviz (scripts/test installs it)" >&2; exit 1; }
dot -Tcanon "$docs/architecture.dot" >/dev/null
[ -s "$docs/architecture.png" ] || { echo "docs/architecture.png is missing: render it" >&2; exit 1; }
# Content, not mtimes (a checkout sets those arbitrarily): a fresh render
# must have the committed PNG's width and height within 10%. That catches a
# source edited without re-rendering (nearly every edit moves the layout's
# size) and tolerates graphviz version drift.
fresh=$(mktemp --suffix=.png)
trap 'rm -f "$fresh"' EXIT
dot -Tpng -Gdpi=110 "$docs/architecture.dot" -o "$fresh"
read -r w1 h1 < <(od -An -tu1 -j16 -N8 "$docs/architecture.png" |
    awk '{print $1*16777216+$2*65536+$3*256+$4, $5*16777216+$6*65536+$7*256+$8}')
read -r w2 h2 < <(od -An -tu1 -j16 -N8 "$fresh" |
    awk '{print $1*16777216+$2*65536+$3*256+$4, $5*16777216+$6*65536+$7*256+$8}')
echo "committed ${w1}x${h1}, fresh render ${w2}x${h2}"
if [ $((w1 * 10)) -lt $((w2 * 9)) ] || [ $((w1 * 10)) -gt $((w2 * 11)) ] ||
   [ $((h1 * 10)) -lt $((h2 * 9)) ] || [ $((h1 * 10)) -gt $((h2 * 11)) ]; then
    echo "docs/architecture.png does not match docs/architecture.dot: re-render it" >&2
    exit 1
fi
echo "architecture picture OK"
