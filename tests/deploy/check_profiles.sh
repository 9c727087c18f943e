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

# shellcheck disable=SC2016 # "$ConnectionString" is the literal user name
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

# The operator's guide checks a new configuration with scripts/check-config
# on the ConfigMap `helm template --show-only templates/configmap.yaml`
# prints: the Event Hubs profile's passes, a wrong one is refused (exit 2).
as_configmap() { # the chart's configmap.yaml around a libconfig file
    printf 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: dw-distribution-worker\ndata:\n'
    printf '  distribution-worker.conf: |\n    # rendered by the Helm chart\n'
    sed 's/^/    /' "$1"
}
as_configmap "$tmp/values-eventhubs.conf" >"$tmp/cm-ok.yaml"
if out=$(env -i PATH="$PATH" "$src/scripts/check-config" -b "$bin" "$tmp/cm-ok.yaml" 2>&1); then
    echo "ok: scripts/check-config accepts the Event Hubs profile's ConfigMap: $out"
else
    echo "FAIL: scripts/check-config refuses the Event Hubs profile's ConfigMap: $out" >&2
    fails=$((fails + 1))
fi
sed 's/commit_interval_ms = 1000;/commit_interval_ms = 100;/' "$tmp/values-eventhubs.conf" >"$tmp/bad.conf"
as_configmap "$tmp/bad.conf" >"$tmp/cm-bad.yaml"
rc=0
out=$(env -i PATH="$PATH" "$src/scripts/check-config" -b "$bin" - <"$tmp/cm-bad.yaml" 2>&1) || rc=$?
if [ $rc = 2 ] && grep -q 'kafka.commit_interval_ms' <<<"$out"; then
    echo "ok: scripts/check-config refuses a 100 ms commit interval on Event Hubs (exit 2)"
else
    echo "FAIL: scripts/check-config on a bad ConfigMap: exit $rc: $out" >&2
    fails=$((fails + 1))
fi

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
