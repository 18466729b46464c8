#!/usr/bin/env bash
# Installs every Debian package that building, testing and benchmarking
# meshgate needs. Idempotent: does nothing when all are present.
set -euo pipefail
PKGS=(build-essential cmake pkg-config libuv1-dev libyaml-dev libcmocka-dev
      clang libclang-rt-14-dev python3 python3-pytest python3-consul curl wrk nginx-light haproxy
      valgrind libhiredis-dev redis-server libjansson-dev libsqlite3-dev)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
echo "deps: installing ${missing[*]}"
# Keep package scripts from starting nginx/haproxy services on ports we use.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
