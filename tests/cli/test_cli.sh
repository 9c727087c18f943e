#!/usr/bin/env bash
# Start-up behaviour of the real binary (CONTRACT section 5): a bad setting
# stops start-up with exit code 2 and a message that names it (the
# environment variable, or the file path with its line); a good file passes
# --check-config. Needs no running parts.
# usage: test_cli.sh WORKER_BINARY SOURCE_DIR
set -u
bin=$1 src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
passed=0 failed=0

# expect NAME CODE PATTERN [VAR=VALUE...] -- ARGS...
expect() {
    local name=$1 code=$2 pattern=$3; shift 3
    local envs=()
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do envs+=("$1"); shift; done
    shift
    local out rc
    out=$(env -i PATH="$PATH" "${envs[@]}" "$bin" "$@" 2>&1 </dev/null)
    rc=$?
    if [ "$rc" = "$code" ] && grep -qE -- "$pattern" <<<"$out"; then
        passed=$((passed + 1)); echo "ok   $name"
    else
        failed=$((failed + 1)); echo "FAIL $name: exit $rc (want $code), output:"; echo "$out" | head -5
    fi
}

conf=$src/conf/distribution-worker.conf
expect "reference file is valid" 0 "configuration OK" -- -c "$conf" --check-config
expect "bad port from the environment names it" 2 "DIST_HTTP_PORT" DIST_HTTP_PORT=abc -- -c "$conf" --check-config
expect "bad log level from the environment names it" 2 "DIST_LOG_LEVEL" DIST_LOG_LEVEL=loud -- -c "$conf" --check-config
expect "a bad setting also stops a real start" 2 "DIST_HTTP_PORT" DIST_HTTP_PORT=-1 -- -c "$conf"

printf 'worker = { threads = 2\n' >"$tmp/syntax.conf"
expect "unparsable file names file and line" 2 "syntax\.conf:[0-9]+: syntax error" -- -c "$tmp/syntax.conf" --check-config

sed 's/^channels = {/channels = {\n    FACEBOOK = { url = "http:\/\/x"; };/' "$conf" >"$tmp/unknown.conf"
expect "unknown channel is named" 2 "channels\.FACEBOOK" -- -c "$tmp/unknown.conf" --check-config

sed 's/threads = 2;/threads = -1;/' "$conf" >"$tmp/negative.conf"
expect "negative size names the setting and line" 2 "worker\.threads.*line" -- -c "$tmp/negative.conf" --check-config

awk '/^    KAKAO = \{/ {skip=1} skip && /url =/ {skip=0; next} {print}' "$conf" >"$tmp/nourl.conf"
expect "missing URL is named" 2 "channels\.KAKAO\.url" -- -c "$tmp/nourl.conf" --check-config
expect "the environment supplies a missing URL" 0 "configuration OK" DIST_CHANNEL_KAKAO_URL=https://127.0.0.1:9 -- -c "$tmp/nourl.conf" --check-config

# Transport policy (CONTRACT section 3).
expect "plain http:// is refused, naming the variable" 2 "DIST_CHANNEL_KAKAO_URL: \"http://127\.0\.0\.1:9\" is plain HTTP" DIST_CHANNEL_KAKAO_URL=http://127.0.0.1:9 -- -c "$conf" --check-config
expect "plain http:// where allowed" 0 "configuration OK" DIST_CHANNEL_KAKAO_URL=http://127.0.0.1:9 DIST_CHANNELS_ALLOW_INSECURE_HTTP=true -- -c "$conf" --check-config
expect "a missing CA file names its variable" 2 "DIST_CHANNEL_KAKAO_CA_FILE: cannot open" DIST_CHANNEL_KAKAO_CA_FILE=$tmp/none.pem -- -c "$conf" --check-config
expect "an unknown channel variable is named" 2 "DIST_CHANNEL_KAKAO_CAFILE: unknown setting" DIST_CHANNEL_KAKAO_CAFILE=$tmp/ca.pem -- -c "$conf" --check-config

# Secrets: a missing or empty channel token stops start-up naming it; a DSN
# libpq cannot parse is refused without its password; an error quoting a
# kafka property masks its secret; a DSN that may go plain text is warned of.
grep -v 'token = "dev-token-kakao"' "$conf" >"$tmp/notoken.conf"
expect "missing token is named" 2 "channels\.KAKAO\.token: missing" -- -c "$tmp/notoken.conf" --check-config
expect "empty token from the environment is named" 2 "DIST_CHANNEL_NAVER_TOKEN: missing or empty" DIST_CHANNEL_NAVER_TOKEN= -- -c "$conf" --check-config
expect_absent() {
    local name=$1 code=$2 pattern=$3 secret=$4; shift 4
    local out rc
    out=$(env -i PATH="$PATH" "$@" 2>&1 </dev/null)
    rc=$?
    if [ "$rc" = "$code" ] && grep -qE -- "$pattern" <<<"$out" && ! grep -qF -- "$secret" <<<"$out"; then
        passed=$((passed + 1)); echo "ok   $name"
    else
        failed=$((failed + 1)); echo "FAIL $name: exit $rc (want $code), output:"; echo "$out" | head -5
    fi
}
expect_absent "malformed DSN is refused without its password" 2 "DIST_PG_DSN: not a libpq connection string" \
    "Hunter22" DIST_PG_DSN='postgresql://app:Pa%zzHunter22@db/x' "$bin" -c "$conf" --check-config
sed 's/^    properties = \[/    properties = [ "sasl.password =Hunter22",/' "$conf" >"$tmp/prop.conf"
expect_absent "a bad kafka property is quoted without its secret" 2 "kafka\.properties" "Hunter22" \
    "$bin" -c "$tmp/prop.conf" --check-config
expect "plain-text PostgreSQL is warned of" 0 "may fall back to plain text: sslmode is not set" -- -c "$conf" --check-config
expect_absent "verify-full is not warned of" 0 "configuration OK" "plain text" DIST_PG_SSLMODE=verify-full \
    "$bin" -c "$conf" --check-config

expect "missing file" 2 "nope\.conf" -- -c "$tmp/nope.conf" --check-config

# librdkafka's properties are checked too, the way librdkafka checks them at
# start-up, without a broker: a bad value, SASL without credentials, a CA
# file that is not there.
props() { # props FILE PROPERTY...: kafka.properties, and the reference file's channels
    local file=$1 sep="" p; shift
    { printf 'kafka = { properties = ['
      for p in "$@"; do printf '%s "%s"' "$sep" "$p"; sep=","; done
      printf ' ]; };\n'
      sed -n '/^channels = {/,$p' "$conf"; } >"$file"
}
props "$tmp/rdk-ok.conf" "linger.ms=5" "socket.keepalive.enable=true"
expect "good librdkafka properties pass" 0 "configuration OK" -- -c "$tmp/rdk-ok.conf" --check-config
props "$tmp/rdk-value.conf" "fetch.wait.max.ms=soon"
expect "a bad librdkafka value is named" 2 "fetch\.wait\.max\.ms" -- -c "$tmp/rdk-value.conf" --check-config
props "$tmp/rdk-sasl.conf" "security.protocol=SASL_SSL" "sasl.mechanism=PLAIN"
expect "SASL without credentials is refused" 2 "sasl\.username and sasl\.password must be set" \
    -- -c "$tmp/rdk-sasl.conf" --check-config
# shellcheck disable=SC2016 # "$ConnectionString" is the literal user name
expect "SASL credentials from the environment pass" 0 "configuration OK" \
    'DIST_KAFKA_SASL_USERNAME=$ConnectionString' DIST_KAFKA_SASL_PASSWORD=Endpoint=sb://x/ \
    -- -c "$tmp/rdk-sasl.conf" --check-config
props "$tmp/rdk-ca.conf" "security.protocol=SSL" "ssl.ca.location=$tmp/no-such-ca.pem"
expect "a missing CA file is refused" 2 "ssl\.ca\.location" -- -c "$tmp/rdk-ca.conf" --check-config
expect "unknown option" 2 "usage" -- --frobnicate
expect "version" 0 "distribution-worker [0-9]" -- --version

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
