#!/usr/bin/env bash
# Installs Debian packages if missing: the ones named as arguments, or by
# default those pinmeter needs to build and run. Used by `make run` (and by
# tests/bench/deps.sh); .ci/run installs the build and test tools itself.
set -euo pipefail
pkgs=(build-essential pkg-config libmicrohttpd-dev libcurl4-openssl-dev libcjson-dev libssl-dev libsqlite3-dev libhiredis-dev)
[ $# -gt 0 ] && pkgs=("$@")
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing: ${missing[*]}"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
