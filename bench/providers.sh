#!/usr/bin/env bash
# providers.sh - bench/providers: 20,000 tasks on one worker against
# gantry-mock-openai at a fixed 50 ms latency, 2,000 in flight; prints tasks/s,
# p50/p99 added latency, peak RSS and RSS per in-flight task.
#   bench/providers.sh [BUILD_DIR] [--count N] [--in-flight M] [--latency-ms L]
set -euo pipefail
cd "$(dirname "$0")/.."
build=build
if [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; then build=$1; shift; fi
[ -x "$build/bench/gantry-bench-providers" ] || { meson setup "$build" >/dev/null; }
ninja -C "$build" >/dev/null
export GANTRY_BUILD_DIR=$(cd "$build" && pwd) GANTRY_SOURCE_DIR=$(pwd)
echo "loadavg: $(cat /proc/loadavg)"
exec "$build/bench/gantry-bench-providers" "$@"
