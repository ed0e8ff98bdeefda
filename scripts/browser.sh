#!/usr/bin/env bash
# The browser that the dashboard page's tests drive: Debian's Chromium and its WebDriver.
#
# Usage: scripts/browser.sh install|status
#
#   install   apt-get install chromium and chromium-driver when either is missing (root;
#             `make test` calls this, so a fresh CI machine gets them)
#   status    print the versions; exit 1 when either is missing
#
# Nothing is downloaded outside Debian's packages: no browser build of Selenium's or
# Playwright's own. The tests start the system browser with a fresh profile and no
# network features (tests/browser/, docs/analyst.md "Testing the page").

set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

have() { command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; }

case ${1:-} in
install)
    if have; then
        exit 0
    fi
    echo "==> installing chromium and chromium-driver (Debian packages)"
    apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null
    apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends \
        chromium chromium-driver fonts-dejavu-core >/dev/null
    have || { echo "scripts/browser.sh: chromium or chromedriver still missing" >&2; exit 1; }
    ;;
status)
    have || { echo "chromium/chromedriver not installed (scripts/browser.sh install)"; exit 1; }
    chromium --version
    chromedriver --version
    ;;
*)
    sed -n '2,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
    exit 2
    ;;
esac
