#!/usr/bin/env bash
# Prometheus and promtool from Debian's `prometheus` package, for the alert-rule checks
# (tests/integration/test_prometheus_rules.py) and `promtool check rules`.
#
# Usage: scripts/observability.sh install | check
#   install   apt-get install prometheus (no recommends, no service started); idempotent
#   check     promtool check rules docker/prometheus/alerts.yml and check config
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export DEBIAN_FRONTEND=noninteractive

install() {
    if command -v promtool >/dev/null 2>&1 && [[ -x /usr/bin/prometheus ]]; then
        return 0
    fi
    [[ $(id -u) -eq 0 ]] || { echo "observability.sh: installing needs root (apt-get)" >&2; exit 1; }
    # The package would start a system Prometheus on :9090; tests run their own instead.
    local guard=""
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        guard=/usr/sbin/policy-rc.d
        printf '#!/bin/sh\nexit 101\n' >"$guard" && chmod +x "$guard"
    fi
    apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null
    apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends prometheus >/dev/null
    if [[ -n $guard ]]; then rm -f "$guard"; fi
}

case ${1:-} in
install) install ;;
check)
    install
    promtool check rules "$REPO/docker/prometheus/alerts.yml"
    ;;
*) sed -n '2,8s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2; exit 2 ;;
esac
