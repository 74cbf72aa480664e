#!/usr/bin/env bash
# Install the system tools the bundle tests run for real: promtool and prometheus
# (Debian's `prometheus` package). Idempotent: does nothing when both are on PATH.
set -euo pipefail

if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo)
else
  echo "install-test-tools: promtool/prometheus missing and neither root nor sudo;" \
    "install Debian's 'prometheus' package by hand" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -q
# The package's service is not wanted: tests start their own Prometheus. policy-rc.d
# keeps apt from starting it on hosts with an init system.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | "${as_root[@]}" tee /usr/sbin/policy-rc.d >/dev/null
  "${as_root[@]}" chmod +x /usr/sbin/policy-rc.d
  trap '"${as_root[@]}" rm -f /usr/sbin/policy-rc.d' EXIT
fi
"${as_root[@]}" apt-get install -y -q --no-install-recommends prometheus
