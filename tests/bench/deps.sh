#!/usr/bin/env bash
# Installs what `make bench` needs beyond the build dependencies, if missing
# (Debian): wrk (load), nginx-light (the baseline), valgrind (instruction
# counts), python3 (the driver). linux-perf is optional and not installed here.
# Note: Debian's nginx package starts its default site on port 80 when it is
# installed; the benchmark runs its own nginx and does not use that one.
set -euo pipefail
pkgs=(wrk nginx-light valgrind python3 util-linux)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# nginx from another package (nginx, nginx-full, nginx-extras) serves as well.
if command -v nginx >/dev/null 2>&1; then
  missing=("${missing[@]/nginx-light}")
fi
read -r -a missing <<<"${missing[*]:-}"
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing: ${missing[*]}"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
