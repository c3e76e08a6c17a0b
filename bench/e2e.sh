#!/usr/bin/env bash
# e2e.sh - benchmark of the whole pipeline: the demo stack with the mock
# HostedAI at a fixed 20 ms latency and no faults; prints requests/s, p50/p99
# end-to-end latency and the makespan against requests x 20 ms / in-flight,
# then the mock's own view (requests, connections, how late it replied), so
# that time in the mock and time in the workers can be told apart.
#   bench/e2e.sh [--count N]   (default 10,000)
set -euo pipefail
cd "$(dirname "$0")/.."
count=10000
[ "${1:-}" = "--count" ] && count=$2
out=$(mktemp /tmp/gantry-e2e.XXXXXX)
trap 'rm -f "$out"' EXIT
rc=0
bash tools/demo.sh --bench --keep --count "$count" --latency-ms 20-20 --fail-rate 0 | tee "$out" ||
    rc=$?
run=$(sed -n 's/^demo: logs kept in //p' "$out")
if [ -n "$run" ] && [ -d "$run" ]; then
    echo "== the mock HostedAI's own view =="
    grep -o '"message":"served[^"]*' "$run/mock.log" | sed 's/^"message":"/  /' || true
    rm -rf "$run"
fi
exit "$rc"
