#!/usr/bin/env bash
# The Helm chart, checked without helm (not packaged for Debian): plain
# text checks that catch what a render would, where they can.
#
#  1. Every .Values path a template reads is defined in values.yaml, and
#     every value in values.yaml is read by some template (itself or a
#     parent map that a template reads whole): no typo, no dead value.
#  2. values-*.yaml set only paths that values.yaml defines, and a list
#     they set (Helm replaces lists whole) keeps every librdkafka property
#     name of values.yaml's list: a profile changes values, it does not
#     silently drop settings.
#  3. Template blocks balance: if/with/range/define against end.
#  4. No ConfigMap template reads .Values.secrets; every DIST_* variable
#     the Deployment sets is documented in docs/configuration.md.
#  5. The dashboard is valid JSON, and every dw_* metric that the
#     dashboard and the alerts use is documented in docs/metrics.md (or
#     listed in tests/deploy/pending-metrics.txt, with who adds it); every
#     alert has its section in docs/operations.md and a runbook annotation
#     pointing at it.
#  6. Autoscaling follows the backlog: the ScaledObject's default trigger
#     is prometheus, its query (the chart's own) names dw_consumer_backlog,
#     which the worker exports (src/metrics*.c) and docs/metrics.md
#     documents; the kafka fallback sets ensureEvenDistributionOfPartitions.
#  7. Operational values are there and used: the NetworkPolicy (ingress
#     from the namespace and the monitoring namespace to the HTTP port;
#     egress to DNS, Kafka, PostgreSQL and the channels, from values),
#     image.digest, and PostgreSQL's sslmode verify-full by default.
#
# usage: check_chart.sh SOURCE_DIR
set -euo pipefail
src=$1
chart=$src/helm/distribution-worker
fails=0
fail() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }
ok() { echo "ok: $*"; }

[ -f "$chart/Chart.yaml" ] || { echo "no chart at $chart" >&2; exit 1; }
command -v jq >/dev/null || { echo "jq not found (Debian package jq)" >&2; exit 1; }

# The dotted key paths of a plain YAML file (maps only; list items are
# leaves of their key).
key_paths() {
    awk '
        /^[[:space:]]*#/ || /^[[:space:]]*$/ || /^---/ { next }
        {
            match($0, /^ */); ind = RLENGTH; line = substr($0, ind + 1)
            if (line ~ /^- /) next
            if (match(line, /^[A-Za-z0-9_.-]+:/)) {
                key = substr(line, 1, RLENGTH - 1)
                while (n > 0 && indent[n] >= ind) n--
                n++; indent[n] = ind; name[n] = key
                path = name[1]
                for (i = 2; i <= n; i++) path = path "." name[i]
                print path
            }
        }' "$1"
}

values=$(key_paths "$chart/values.yaml" | sort -u)
templates=("$chart"/templates/*)

# ---- 1. values read by templates ----
read_paths=$(grep -ohE 'Values(\.[A-Za-z_][A-Za-z0-9_]*)+' "${templates[@]}" | sed 's/^Values\.//' | sort -u)
missing=0
while read -r p; do
    [ -z "$p" ] && continue
    if ! grep -qxF "$p" <<<"$values"; then
        fail "templates read .Values.$p, which values.yaml does not define"
        missing=$((missing + 1))
    fi
done <<<"$read_paths"
if [ $missing = 0 ]; then ok "all $(wc -l <<<"$read_paths") .Values paths the templates read are defined"; fi

unused=0
# Leaves only: a map is read when any of its values is.
leaves=$(awk 'NR > 1 && index($0, prev ".") != 1 { print prev } { prev = $0 } END { print prev }' <<<"$values")
while read -r v; do
    used=0
    probe=$v
    while :; do
        if grep -qxF "$probe" <<<"$read_paths"; then used=1; break; fi
        [[ $probe == *.* ]] || break
        probe=${probe%.*}
    done
    if [ $used = 0 ]; then
        fail "values.yaml defines $v, which no template reads"
        unused=$((unused + 1))
    fi
done <<<"$leaves"
if [ $unused = 0 ]; then ok "every value in values.yaml is read by a template"; fi

# ---- 2. values-dev.yaml ----
bad=0
for f in "$chart"/values-*.yaml; do
    while read -r p; do
        if ! grep -qxF "$p" <<<"$values"; then
            fail "$(basename "$f") sets $p, which values.yaml does not define"
            bad=$((bad + 1))
        fi
    done < <(key_paths "$f")
done
if [ $bad = 0 ]; then ok "values-*.yaml set only defined values"; fi
py=python3
if [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import yaml' 2>/dev/null; then py=/usr/bin/python3; fi
lost=$("$py" - "$chart"/values.yaml "$chart"/values-*.yaml <<'PY'
import sys, yaml

def lists(node, path=""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from lists(v, f"{path}.{k}" if path else k)
    elif isinstance(node, list):
        yield path, node

base = dict(lists(yaml.safe_load(open(sys.argv[1]))))
for f in sys.argv[2:]:
    for path, items in lists(yaml.safe_load(open(f)) or {}):
        names = {str(i).split("=", 1)[0] for i in items}
        for i in base.get(path, []):
            if isinstance(i, str) and "=" in i and i.split("=", 1)[0] not in names:
                print(f"{f.rsplit('/', 1)[-1]}: {path} replaces values.yaml's list and drops {i}")
PY
) || fail "could not compare the lists of values-*.yaml (python3-yaml)"
if [ -n "$lost" ]; then
    while read -r l; do fail "$l (Helm replaces lists whole: repeat it)"; done <<<"$lost"
else
    ok "lists in values-*.yaml keep every property of values.yaml's lists"
fi

# ---- 3. template blocks ----
for t in "${templates[@]}"; do
    opens=$(grep -oE '\{\{-?[[:space:]]*(if|with|range|define)[[:space:]]' "$t" | wc -l || true)
    ends=$(grep -oE '\{\{-?[[:space:]]*end[[:space:]]*-?\}\}' "$t" | wc -l || true)
    lefts=$(grep -o '{{' "$t" | wc -l || true)
    rights=$(grep -o '}}' "$t" | wc -l || true)
    if [ "$opens" != "$ends" ]; then
        fail "$(basename "$t"): $opens block(s) opened, $ends end(s)"
    elif [ "$lefts" != "$rights" ]; then
        fail "$(basename "$t"): $lefts '{{' against $rights '}}'"
    fi
done
ok "template blocks checked in ${#templates[@]} files"

# ---- 4. secrets stay out of ConfigMaps; variables are documented ----
for t in "${templates[@]}"; do
    if grep -q '^kind: ConfigMap' "$t" && grep -qE 'Values\.secrets' "$t"; then
        fail "$(basename "$t") is a ConfigMap and reads .Values.secrets"
    fi
done
ok "no ConfigMap template reads .Values.secrets"
vars=$(grep -ohE 'DIST_[A-Z0-9_]*[A-Z0-9]' "$chart/templates/deployment.yaml" | grep -vx DIST_CHANNEL | sort -u)
for v in $vars; do
    if ! grep -q "$v" "$src/docs/configuration.md"; then
        fail "$v is set by the Deployment but not documented in docs/configuration.md"
    fi
done
# shellcheck disable=SC2016 # the template's text, not a shell expansion
if ! grep -q 'DIST_CHANNEL_{{ $name }}_TOKEN' "$chart/templates/deployment.yaml" ||
    ! grep -q 'DIST_CHANNEL_<CHANNEL>_TOKEN' "$src/docs/configuration.md"; then
    fail "the channel token variables are not both set and documented"
fi
ok "DIST_* variables of the Deployment: $(tr '\n' ' ' <<<"$vars")DIST_CHANNEL_<CHANNEL>_TOKEN"

# ---- 5. dashboard and alerts against docs/metrics.md ----
dash=$chart/dashboards/distribution-worker.json
if jq -e '.panels | length > 0' "$dash" >/dev/null; then ok "dashboard JSON parses ($(jq '.panels | length' "$dash") panels)"
else fail "$dash is not valid dashboard JSON"; fi
documented=$(grep -oE '`(dw|process)_[a-z_]+' "$src/docs/metrics.md" | tr -d '`' | sort -u)
pending=$(grep -vE '^[[:space:]]*(#|$)' "$src/tests/deploy/pending-metrics.txt" 2>/dev/null | awk '{print $1}' || true)
used=$( (jq -r '.. | .expr? // empty' "$dash"; cat "$chart/templates/prometheusrule.yaml") |
    grep -oE '\b(dw|process)_[a-z_]+' | sed -E 's/_(bucket|sum|count)$//' | sort -u)
for m in $used; do
    if grep -qxF "$m" <<<"$documented"; then continue; fi
    if grep -qxF "$m" <<<"$pending"; then echo "note: $m is used but not yet documented (tests/deploy/pending-metrics.txt)"; continue; fi
    fail "$m is used by the dashboard or the alerts but not documented in docs/metrics.md"
done
ok "metrics used by the dashboard and the alerts: $(tr '\n' ' ' <<<"$used")"
# Every alert has its section in docs/operations.md ("Alerts"), and its
# runbook annotation points at that section.
rules=$chart/templates/prometheusrule.yaml
alerts=$(sed -n 's/^ *- alert: *\([A-Za-z]*\).*/\1/p' "$rules")
for a in $alerts; do
    grep -qx "### $a" "$src/docs/operations.md" ||
        fail "alert $a has no '### $a' section in docs/operations.md"
    anchor=$(tr '[:upper:]' '[:lower:]' <<<"$a")
    rule=$(awk -v a="$a" '$0 ~ "- alert: " a "$" {on = 1; next} on && /- alert:/ {exit} on' "$rules")
    grep -q "runbook: docs/operations.md#$anchor\$" <<<"$rule" ||
        fail "alert $a: its runbook annotation is not docs/operations.md#$anchor"
done
ok "alerts with a runbook section: $(tr '\n' ' ' <<<"$alerts")"

# ---- 6. the ScaledObject scales on the backlog metric ----
backlog_metric=dw_consumer_backlog
so=$chart/templates/scaledobject.yaml
helpers=$chart/templates/_helpers.tpl
default_trigger=$(awk '/^  keda:/ {k = 1} k && /^    trigger:/ {print $2; exit}' "$chart/values.yaml")
if [ "$default_trigger" != prometheus ]; then
    fail "autoscaling.keda.trigger defaults to '$default_trigger', not prometheus (the backlog)"
fi
if ! grep -q -- '- type: prometheus' "$so" || ! grep -q 'include "dw.backlogQuery"' "$so"; then
    fail "scaledobject.yaml has no prometheus trigger whose query is dw.backlogQuery"
fi
# No `producer | grep -q` under pipefail: grep leaves at the first match,
# the producer may die of SIGPIPE, and the pipeline then fails on a match.
backlog_query=$(awk '/define "dw.backlogQuery"/ {d = 1} d && /end -}}$/ && ++e == 2 {exit} d' "$helpers")
if ! grep -q "${backlog_metric}{" <<<"$backlog_query"; then
    fail "dw.backlogQuery does not query $backlog_metric"
fi
if ! grep -q "\"$backlog_metric" "$src"/src/metrics*.c; then
    fail "the worker does not export $backlog_metric (src/metrics*.c)"
fi
if ! grep -q "^### \`$backlog_metric" "$src/docs/metrics.md"; then
    fail "$backlog_metric is not documented in docs/metrics.md"
fi
if ! grep -q 'ensureEvenDistributionOfPartitions: "true"' "$so"; then
    fail "the kafka fallback trigger does not set ensureEvenDistributionOfPartitions"
fi
ok "the ScaledObject scales on $backlog_metric (default trigger: $default_trigger)"

# ---- 7. operational values ----
for v in networkPolicy.enabled networkPolicy.monitoringNamespace networkPolicy.extraIngressFrom \
    networkPolicy.egress.dns.enabled networkPolicy.egress.kafka.ports networkPolicy.egress.kafka.to \
    networkPolicy.egress.postgres.ports networkPolicy.egress.postgres.to \
    networkPolicy.egress.channels.ports networkPolicy.egress.channels.to networkPolicy.egress.extra \
    image.digest; do
    grep -qxF "$v" <<<"$values" || fail "values.yaml lacks $v"
done
np=$chart/templates/networkpolicy.yaml
if [ ! -f "$np" ] || ! grep -q '^kind: NetworkPolicy' "$np"; then
    fail "no NetworkPolicy template"
else
    for want in 'kubernetes.io/metadata.name: {{ required "networkPolicy.monitoringNamespace"' \
        '- podSelector: {}' 'port: {{ int .Values.config.http.port }}' 'k8s-app: kube-dns' \
        'list "kafka" "postgres" "channels"' '- Ingress' '- Egress'; do
        grep -qF -- "$want" "$np" || fail "networkpolicy.yaml lacks: $want"
    done
fi
grep -q 'Values.image.digest' "$helpers" || fail "dw.image does not read image.digest"
sslmode=$(awk '/^  postgres:/ {p = 1} p && /^    sslmode:/ {print $2; exit}' "$chart/values.yaml")
[ "$sslmode" = verify-full ] || fail "config.postgres.sslmode defaults to '$sslmode', not verify-full"
ok "NetworkPolicy, image.digest and sslmode ($sslmode) in place"
if ! grep -q 'secrets-store.csi.k8s.io' "$chart/templates/deployment.yaml" ||
    ! grep -q 'Values.secrets.secretProviderClass' "$chart/templates/deployment.yaml"; then
    fail "the Deployment mounts no Secrets Store CSI volume for secrets.secretProviderClass"
fi
# The guide's in-cluster psql pod: the worker Secret's DSN key, TLS verified, non-root.
if "$py" - "$src/docs/pg-shell.yaml" <<'PY'
import sys, yaml
pod = yaml.safe_load(open(sys.argv[1]))
c = pod["spec"]["containers"][0]
env = {e["name"]: e for e in c["env"]}
assert env["PG_DSN"]["valueFrom"]["secretKeyRef"]["key"] == "pg-dsn"
assert env["PGSSLMODE"]["value"] == "verify-full"
assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
assert pod["spec"]["initContainers"][0]["image"] == "WORKER_IMAGE"
PY
then ok "docs/pg-shell.yaml: DSN from pg-dsn, verify-full, non-root"
else fail "docs/pg-shell.yaml does not read pg-dsn with verify-full as a non-root pod"; fi

if [ $fails -gt 0 ]; then
    echo "$fails check(s) failed" >&2
    exit 1
fi
echo "chart checks passed"
