#!/usr/bin/env bash
# yamllint (strict: warnings fail) over the chart's plain YAML: Chart.yaml
# and values*.yaml. Templates are Go templates (check_chart.sh covers them).
# usage: lint_chart_yaml.sh SOURCE_DIR
set -euo pipefail
chart=$1/helm/distribution-worker
command -v yamllint >/dev/null ||
    { echo "yamllint not found: Debian package yamllint (scripts/test installs it)" >&2; exit 1; }
files=("$chart/Chart.yaml" "$chart"/values*.yaml)
yamllint --strict -c "$(dirname "$0")/yamllint.yaml" "${files[@]}"
echo "yamllint: ${#files[@]} file(s) clean"
