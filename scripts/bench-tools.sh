#!/usr/bin/env bash
# Tools the benchmarks need besides the Python packages (which come with `pip install -e
# '.[dev]'`: matplotlib for the plots, py-spy for profiles): wrk, the HTTP load generator,
# from Debian's packages. Idempotent; `make bench` runs it first.
set -euo pipefail

missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v taskset >/dev/null 2>&1 || missing+=(util-linux)
if [[ ${#missing[@]} -gt 0 ]]; then
    if [[ $(id -u) -ne 0 ]]; then
        echo "bench-tools: installing ${missing[*]} needs root (apt-get)" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    echo "[bench-tools] apt-get install -y ${missing[*]}"
    apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null
    apt-get -o DPkg::Lock::Timeout=600 install -y -q "${missing[@]}" >/dev/null
fi
echo "[bench-tools] $(wrk -v 2>&1 | head -n1)"
