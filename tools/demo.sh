#!/usr/bin/env bash
# demo.sh - Gantry end to end on one machine, on the embedded defaults:
# embedded Kafka, a throwaway PostgreSQL, the mock HostedAI, one dispatcher and
# two workers; submits 1,000 requests (a few malformed, a few re-sent, one
# batch of 50) and prints what came out. Everything stops at the end.
#   tools/demo.sh [--count N] [--latency-ms A-B] [--fail-rate R] [--brokers N] [--keep] [--bench]
# --bench sends only good requests and prints throughput, end-to-end latency
# percentiles and the makespan against the ideal (bench/e2e.sh uses it).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

count=1000 latency=10-30 fail=0.05 keep=0 bench=0 brokers=1
while [ $# -gt 0 ]; do
    case $1 in
    --count) count=$2; shift 2 ;;
    --latency-ms) latency=$2; shift 2 ;;
    --fail-rate) fail=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    --bench) bench=1; shift ;;
    --brokers) brokers=$2; shift 2 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "demo.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

bash tools/setup.sh
[ -f build/build.ninja ] || meson setup build >/dev/null
ninja -C build >/dev/null
B=$root/build

run=$(mktemp -d /tmp/gantry-demo.XXXXXX)
chmod 755 "$run"
pids=()
cleanup() {
    # Newest first: Gantry's processes drain against a live Kafka (with the
    # broker gone each waits out its drain time), then the mocks and Kafka.
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        kill -TERM "${pids[i]}" 2>/dev/null || true
        wait "${pids[i]}" 2>/dev/null || true
    done
    bash tests/pg.sh stop "$run/pg" >/dev/null 2>&1 || true
    [ "$keep" = 1 ] && echo "demo: logs kept in $run" || rm -rf "$run"
}
trap cleanup EXIT

# Waits for a "name=value" line on a process's stdout file; prints the value.
wait_line() {
    local file=$1 prefix=$2 deadline=$((SECONDS + 30))
    while [ $SECONDS -lt $deadline ]; do
        if grep -q "^$prefix=" "$file" 2>/dev/null; then
            grep -m1 "^$prefix=" "$file" | cut -d= -f2-
            return 0
        fi
        sleep 0.1
    done
    echo "demo: timed out waiting for $prefix in $file" >&2
    return 1
}

echo "demo: starting embedded Kafka, PostgreSQL and the mock HostedAI (latency ${latency} ms, fault rate $fail)"
"$B/tools/gantry-kafka-dev" --brokers "$brokers" >"$run/kafka.out" 2>"$run/kafka.log" & pids+=($!)
eval "$(bash tests/pg.sh start "$run/pg" 2>"$run/pg.log")"
export HOSTEDAI_API_KEY=demo-$RANDOM$RANDOM
"$B/tools/gantry-mock-hostedai" --port 0 --api-key "$HOSTEDAI_API_KEY" --latency-ms "$latency" \
    --fail-rate "$fail" --capacity-tflops 100000 --vram-mb 100000000 \
    >"$run/mock.out" 2>"$run/mock.log" & pids+=($!)
export GANTRY_KAFKA=$(wait_line "$run/kafka.out" bootstrap)
export HOSTEDAI_ENDPOINT=http://$(wait_line "$run/mock.out" listening)
psql -q -h "$GANTRY_TEST_PGHOST" -p "$GANTRY_TEST_PGPORT" -U gantry -d postgres -c "CREATE DATABASE gantry"
export GANTRY_PG="host=$GANTRY_TEST_PGHOST port=$GANTRY_TEST_PGPORT user=gantry dbname=gantry"
cfg=$root/deploy/gantry.local.json

"$B/tools/gantry" migrate --config "$cfg"
"$B/dispatcher/gantry-dispatcher" --config "$cfg" 2>"$run/dispatcher.log" & pids+=($!)
"$B/workers/gantry-worker" --config "$cfg" --id worker-1 >/dev/null 2>"$run/worker-1.log" & pids+=($!)
"$B/workers/gantry-worker" --config "$cfg" --id worker-2 >/dev/null 2>"$run/worker-2.log" & pids+=($!)

# Submit once every consumer group has its partitions: the first join waits
# out the group's initial rebalance delay (3 s on the embedded cluster).
assigned() { grep -c "kafka consumer: assigned" "$1" 2>/dev/null || true; }
deadline=$((SECONDS + 60))
until [ "$(assigned "$run/dispatcher.log")" -ge 3 ] && [ "$(assigned "$run/worker-1.log")" -ge 1 ] &&
      [ "$(assigned "$run/worker-2.log")" -ge 1 ]; do
    [ $SECONDS -lt $deadline ] || { echo "demo: consumers not assigned after 60 s" >&2; exit 1; }
    sleep 0.1
done

mix=(--bad 10 --dup 10 --batch 50)
[ "$bench" = 1 ] && mix=(--bad 0 --dup 0 --batch 0)
"$B/tools/gantry-loadgen" --count "$count" "${mix[@]}" >"$run/requests.jsonl" 2>"$run/loadgen.txt"
expected=$(grep -c . "$run/requests.jsonl")
[ "$bench" = 1 ] || expected=$((expected - 20))
echo "demo: submitting $(grep -c . "$run/requests.jsonl") messages ($(cat "$run/loadgen.txt"))"
start=$(date +%s%N)
"$B/tools/gantry" submit --config "$cfg" --file "$run/requests.jsonl" 2>>"$run/submit.log"

results() { "$B/tools/gantry" results --config "$cfg" 2>/dev/null; }
deadline=$((SECONDS + 300))
while [ "$(results | wc -l)" -lt "$expected" ]; do
    [ $SECONDS -lt $deadline ] || { echo "demo: timed out waiting for results" >&2; exit 1; }
    sleep 0.5
done
ms=$(( ($(date +%s%N) - start) / 1000000 ))
elapsed=$(printf "%d.%03d" $((ms / 1000)) $((ms % 1000)))

# Usage rows trail the results by a ledger batch; outstanding allocations by a release.
psqlq() { psql -At -h "$GANTRY_TEST_PGHOST" -p "$GANTRY_TEST_PGPORT" -U gantry -d gantry -c "$1"; }
stats() { curl -s -H "Authorization: Bearer $HOSTEDAI_API_KEY" "$HOSTEDAI_ENDPOINT/v1/stats"; }
field() { stats | python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
for _ in $(seq 100); do
    [ "$(psqlq 'SELECT count(*) FROM usage')" = "$(field inference_ok)" ] && \
        [ "$(field outstanding_allocations)" = 0 ] && break
    sleep 0.1
done

echo
echo "== results by status ($expected expected, ${elapsed}s) =="
results | python3 -c '
import collections, json, sys
c = collections.Counter(json.loads(l)["status"] for l in sys.stdin)
for k, v in sorted(c.items()): print(f"  {k:10} {v}")'
echo "== DLQ entries by error code =="
"$B/tools/gantry" results --config "$cfg" --topic gantry.dlq | python3 -c '
import collections, json, sys
c = collections.Counter(json.loads(l)["error"]["code"] for l in sys.stdin)
for k, v in sorted(c.items()): print(f"  {k:18} {v}")
print("  %-18s %d" % ("total", sum(c.values())))'
echo "== usage rows =="
echo "  $(psqlq 'SELECT count(*) FROM usage') rows, $(psqlq 'SELECT count(DISTINCT event_id) FROM usage') distinct events, $(field inference_ok) successful inference calls at HostedAI"
echo "== outstanding allocations =="
echo "  $(field outstanding_allocations) (of $(field allocations_total) acquired)"

if [ "$bench" = 1 ]; then
    # End-to-end latency per request: Kafka timestamp of its result minus that
    # of its request (both set by the producers, on this machine's clock).
    in_flight=$(python3 -c "import json; print(json.load(open('$cfg'))['worker']['max_in_flight'] * 2)")
    kcat -C -b "$GANTRY_KAFKA" -t gantry.requests -e -q -f '%k %T\n' >"$run/req.ts"
    kcat -C -b "$GANTRY_KAFKA" -t gantry.results -e -q -f '%k %T\n' >"$run/res.ts"
    echo "== bench/e2e: $count requests, mock latency ${latency} ms, $in_flight tasks in flight (2 workers) =="
    python3 - "$run/req.ts" "$run/res.ts" "$latency" "$in_flight" <<'PY'
import sys
req = dict(l.split() for l in open(sys.argv[1]) if l.strip())
res = dict(l.split() for l in open(sys.argv[2]) if l.strip())
lat = sorted(int(res[k]) - int(req[k]) for k in res if k in req)
n = len(lat)
first, last = min(int(v) for v in req.values()), max(int(v) for v in res.values())
makespan = (last - first) / 1000.0
mock_ms = float(sys.argv[3].split("-")[0])
ideal = n * mock_ms / 1000.0 / int(sys.argv[4])
pct = lambda p: lat[min(n - 1, int(p * n))]
print(f"  requests/s          {n / makespan:.0f}")
print(f"  end-to-end p50      {pct(0.50)} ms")
print(f"  end-to-end p99      {pct(0.99)} ms")
print(f"  makespan            {makespan:.2f} s (ideal {ideal:.2f} s = {n} x {mock_ms:.0f} ms / {sys.argv[4]})")
print(f"  makespan / ideal    {makespan / ideal:.1f}")
PY
    echo "  stages (mean ms): $(psqlq "SELECT 'intake ' || round(avg(extract(epoch FROM t.queued_at - j.created_at) * 1000))
        || ', queued->task done ' || round(avg(extract(epoch FROM t.completed_at - t.queued_at) * 1000))
        || ', task done->job done ' || round(avg(extract(epoch FROM j.completed_at - t.completed_at) * 1000))
        FROM jobs j JOIN tasks t USING (request_id) WHERE t.kind = 'inference'")"
    echo "  HostedAI calls (mean ms): $(psqlq "SELECT 'allocate ' || round(avg(allocate_ms))
        || ', inference ' || round(avg(inference_ms)) || ', release ' || round(avg(release_ms))
        || ', task total ' || round(avg(total_ms)) FROM usage")"
fi
