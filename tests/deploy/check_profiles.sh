#!/usr/bin/env bash
# Every chart profile renders a configuration the worker accepts: the
# libconfig file of values.yaml alone, and of values.yaml with each
# values-*.yaml on top (values-eventhubs.yaml: Microsoft's settings for
# Azure Event Hubs), goes through `distribution-worker --check-config`,
# which also has librdkafka check every property of both clients. The
# environment is what the Deployment gives a pod: the DSN, the SASL
# credentials (placeholders) and the channel tokens.
#
# usage: check_profiles.sh WORKER_BINARY SOURCE_DIR
set -euo pipefail
bin=$1 src=$2
chart=$src/helm/distribution-worker
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Debian's python3 (python3-yaml) first, whatever else is on PATH.
py=python3
if [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import yaml' 2>/dev/null; then py=/usr/bin/python3; fi
"$py" -c 'import yaml' 2>/dev/null ||
    { echo "python3 with yaml not found (Debian package python3-yaml)" >&2; exit 1; }

env_of_pod=(DIST_PG_DSN=postgresql://worker@db.example.com:5432/distribution
    'DIST_KAFKA_SASL_USERNAME=$ConnectionString'
    'DIST_KAFKA_SASL_PASSWORD=Endpoint=sb://my-namespace.servicebus.windows.net/;SharedAccessKeyName=distribution-worker;SharedAccessKey=placeholder')
for ch in URIDONGNETV GINITV RINGOBIZ INSTAGRAM NAVER KAKAO; do
    env_of_pod+=("DIST_CHANNEL_${ch}_TOKEN=placeholder")
done

fails=0
for profile in "" "$chart"/values-*.yaml; do
    name=${profile:+$(basename "$profile")}
    name=${name:-values.yaml}
    conf=$tmp/${name%.yaml}.conf
    "$py" "$(dirname "$0")/render_config.py" "$chart" ${profile:+"$profile"} >"$conf"
    if out=$(env -i PATH="$PATH" "${env_of_pod[@]}" "$bin" -c "$conf" --check-config 2>&1); then
        echo "ok: $name: $out"
    else
        echo "FAIL: $name is refused: $out" >&2
        sed 's/^/    /' "$conf" >&2
        fails=$((fails + 1))
    fi
done

# The Event Hubs profile carries Microsoft's settings.
eh=$tmp/values-eventhubs.conf
for want in '"request.timeout.ms=60000"' '"message.max.bytes=1000000"' \
    '"connections.max.idle.ms=180000"' '"metadata.max.age.ms=180000"' \
    '"security.protocol=SASL_SSL"' '"sasl.mechanism=PLAIN"' 'commit_interval_ms = 1000;' \
    'brokers = "my-namespace.servicebus.windows.net:9093";'; do
    if ! grep -qF -- "$want" "$eh"; then
        echo "FAIL: the Event Hubs profile lacks $want" >&2
        fails=$((fails + 1))
    fi
done
[ $fails = 0 ] && echo "ok: the Event Hubs profile has Microsoft's settings"

[ $fails = 0 ] || { echo "$fails check(s) failed" >&2; exit 1; }
echo "profile checks passed"
