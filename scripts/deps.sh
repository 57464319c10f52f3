#!/usr/bin/env bash
# Installs the Debian packages pinmeter needs to build and run, if missing.
# Used by `make run`; .ci/run installs these and the test tools itself.
set -euo pipefail
pkgs=(build-essential pkg-config libmicrohttpd-dev libcurl4-openssl-dev libcjson-dev libssl-dev libsqlite3-dev)
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
