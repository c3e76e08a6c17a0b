#!/usr/bin/env bash
# e2e.sh - benchmark of the whole pipeline: the demo stack with the mock
# HostedAI at a fixed 20 ms latency and no faults; prints requests/s, p50/p99
# end-to-end latency and the makespan against requests x 20 ms / in-flight.
#   bench/e2e.sh [--count N]   (default 10,000)
set -euo pipefail
cd "$(dirname "$0")/.."
count=10000
[ "${1:-}" = "--count" ] && count=$2
exec bash tools/demo.sh --bench --count "$count" --latency-ms 20-20 --fail-rate 0
