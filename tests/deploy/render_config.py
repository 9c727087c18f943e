#!/usr/bin/env python3
"""The worker's libconfig file as the chart's ConfigMap would hold it,
without helm (not packaged for Debian): values.yaml, then each -f file
merged on top as Helm does (maps merge, lists and scalars replace, null
removes), then what the dw.config helper of templates/_helpers.tpl adds
(kafkaSecurity as librdkafka properties, the PostgreSQL CA path), written
as dw.libconfig.group writes it. Keep it in step with _helpers.tpl.

usage: render_config.py CHART_DIR [VALUES_FILE...] > worker.conf
"""
import json
import sys

import yaml


def merge(base, over):
    for key, value in over.items():
        if value is None:
            base.pop(key, None)
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value
    return base


def scalar(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(int(v)) if float(v).is_integer() else repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    raise SystemExit(f"config: cannot write a {type(v).__name__} as a libconfig value")


def group(m, indent, out):
    pad = " " * indent
    for key in sorted(m):  # Go templates range over maps in key order
        value = m[key]
        if isinstance(value, dict):
            out.append(f"{pad}{key} = {{")
            group(value, indent + 4, out)
            out.append(f"{pad}}};")
        elif isinstance(value, list):
            if not value:
                out.append(f"{pad}{key} = [ ];")
                continue
            out.append(f"{pad}{key} = [")
            for i, e in enumerate(value):
                out.append(f"{pad}    {scalar(e)}{',' if i + 1 < len(value) else ''}")
            out.append(f"{pad}];")
        elif value is not None:
            out.append(f"{pad}{key} = {scalar(value)};")


def main():
    chart = sys.argv[1]
    with open(f"{chart}/values.yaml") as f:
        values = yaml.safe_load(f)
    for path in sys.argv[2:]:
        with open(path) as f:
            merge(values, yaml.safe_load(f) or {})
    cfg = values["config"]
    sec = values["kafkaSecurity"]
    props = list(cfg["kafka"].get("properties") or [])
    if sec.get("protocol"):
        props.append(f"security.protocol={sec['protocol']}")
    if sec.get("saslMechanism"):
        props.append(f"sasl.mechanism={sec['saslMechanism']}")
    if sec["caSecret"].get("name"):
        props.append("ssl.ca.location=/var/run/secrets/distribution-worker/kafka-ca/"
                     + sec["caSecret"]["key"])
    elif sec.get("caLocation"):
        props.append(f"ssl.ca.location={sec['caLocation']}")
    cfg["kafka"]["properties"] = props
    pg_ca = values["postgresSecurity"]["caSecret"]
    if pg_ca.get("name"):
        cfg["postgres"]["sslrootcert"] = ("/var/run/secrets/distribution-worker/pg-ca/"
                                          + pg_ca["key"])
    out = []
    group(cfg, 0, out)
    print("\n".join(out))


if __name__ == "__main__":
    main()
