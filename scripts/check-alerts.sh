#!/usr/bin/env bash
# Checks the shipped Prometheus rules: `promtool check rules` (syntax, PromQL, templates) and
# `promtool test rules` (every alert fires on a synthetic failing series and stays quiet on a
# healthy one: deploy/prometheus/alerts.test.yaml). The dashboard's and the rules' metric names
# are checked against a running daemon by tests/it/dashboard.rs (cargo test --test it dashboard::).
#
# Installs promtool from Debian's `prometheus` package when it is missing (as root, or through
# sudo). Without systemd, the package's postinst would start a Prometheus server through its
# init script (and fail the install if it cannot): a policy-rc.d that forbids starting services
# is put in place for the install, unless the system has one already, and removed afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

RULES=deploy/prometheus/alerts.yaml
TESTS=deploy/prometheus/alerts.test.yaml
DASHBOARD=deploy/grafana/stac-uploadd.json

install_promtool() {
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || {
            echo "promtool is missing: install Debian's prometheus package (or put promtool on PATH)" >&2
            exit 1
        }
        sudo=(sudo)
    fi
    command -v apt-get >/dev/null || {
        echo "promtool is missing and there is no apt-get: put promtool (Prometheus' release tarball) on PATH" >&2
        exit 1
    }
    local policy=/usr/sbin/policy-rc.d ours=""
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\n# stac-uploadd scripts/check-alerts.sh: no service starts during the install\nexit 101\n' |
            "${sudo[@]}" tee "$policy" >/dev/null
        "${sudo[@]}" chmod 755 "$policy"
        ours=1
        # Expanded now: the trap may run after this function's locals are gone.
        trap "${sudo[*]} rm -f $policy" EXIT
    fi
    local apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive timeout --kill-after=30 900
        apt-get -y -q -o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confdef
        -o Dpkg::Options::=--force-confold)
    echo "promtool missing: apt-get install prometheus (no recommends; services are not started)"
    # A fresh machine may have no package lists yet: update once if the first try fails.
    "${apt[@]}" install --no-install-recommends prometheus >/dev/null ||
        { "${apt[@]}" update >/dev/null && "${apt[@]}" install --no-install-recommends prometheus >/dev/null; }
    if [ -n "$ours" ]; then
        "${sudo[@]}" rm -f "$policy"
        trap - EXIT
    fi
}

command -v promtool >/dev/null || install_promtool
promtool --version 2>&1 | head -1
promtool check rules "$RULES"
promtool test rules "$TESTS"

# The dashboard's queries parse as PromQL: each becomes a recording rule of a scratch file, with
# Grafana's variables replaced by values of their kind, for `promtool check rules`.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
python3 - "$DASHBOARD" "$scratch/dashboard.rules.yaml" <<'PY'
import json, sys

def exprs(node):
    if isinstance(node, dict):
        if isinstance(node.get("expr"), str):
            yield node["expr"]
        for v in node.values():
            yield from exprs(v)
    elif isinstance(node, list):
        for v in node:
            yield from exprs(v)

found = list(exprs(json.load(open(sys.argv[1]))["panels"]))
if not found:
    sys.exit(f"{sys.argv[1]}: no panel queries found")
with open(sys.argv[2], "w") as out:
    out.write("groups:\n  - name: dashboard\n    rules:\n")
    for i, e in enumerate(found):
        e = e.replace("$__rate_interval", "5m").replace("$__interval", "1m").replace("$job_name", "radar")
        out.write(f"      - record: dashboard:query{i}\n        expr: {json.dumps(e)}\n")
print(f"{sys.argv[1]}: {len(found)} queries")
PY
promtool check rules "$scratch/dashboard.rules.yaml"
