#!/usr/bin/env bash
# Installs what `make bench` needs beyond the build dependencies, if missing
# (Debian): wrk (load), nginx-light (the baseline; with ssl and http2 it is
# also the TLS upstream), openssl (its certificate), valgrind (instruction
# counts), python3 (the driver), redis-server (the `redis` scenario's shared
# budget store). linux-perf is optional and not installed here.
# Note: Debian's nginx package starts its default site on port 80 when it is
# installed; the benchmark runs its own nginx and does not use that one.
set -euo pipefail
pkgs=(wrk valgrind python3 util-linux openssl)
# nginx from another package (nginx, nginx-full, nginx-extras) serves as well.
command -v nginx >/dev/null 2>&1 || pkgs+=(nginx-light)
# a redis-server from another package (e.g. redis.io's "redis") serves as well.
command -v redis-server >/dev/null 2>&1 || pkgs+=(redis-server)
exec "$(dirname "$0")/../../scripts/deps.sh" "${pkgs[@]}"
