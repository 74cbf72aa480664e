#!/usr/bin/env bash
# Install the system tools the bundle tests (tests/bundle) run for real, from Debian:
# promtool and prometheus (package `prometheus`), and kubectl for `kubectl kustomize`
# (package `kubernetes-client`). Idempotent: installs only what is missing from PATH.
set -euo pipefail

packages=()
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
  packages+=(prometheus)
fi
if ! command -v kubectl >/dev/null 2>&1; then
  packages+=(kubernetes-client)
fi
if [ "${#packages[@]}" -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo)
else
  echo "install-test-tools: ${packages[*]} missing, and neither root nor sudo;" \
    "install these Debian packages by hand" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -q
# The tests start their own Prometheus: policy-rc.d keeps apt from starting the
# package's service on hosts with an init system.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | "${as_root[@]}" tee /usr/sbin/policy-rc.d >/dev/null
  "${as_root[@]}" chmod +x /usr/sbin/policy-rc.d
  trap '"${as_root[@]}" rm -f /usr/sbin/policy-rc.d' EXIT
fi
"${as_root[@]}" apt-get install -y -q --no-install-recommends "${packages[@]}"
