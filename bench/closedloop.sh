#!/usr/bin/env bash
# closedloop.sh - bench/closedloop: the whole pipeline on the shipped local configuration
# (deploy/gantry.local.json: its kafka, worker and reaper settings) with its models replaced by
# one OpenAI-compatible model on gantry-mock-openai at a fixed latency; embedded Kafka, a
# throwaway PostgreSQL, one dispatcher and two workers. Keeps N requests outstanding and prints
# requests/s, ratio to ideal, added p50/p99 and CPU ms per request of each process.
#   bench/closedloop.sh [--in-flight N] [--latency-ms L] [--duration S] [--warmup S]
#                       [--config FILE] [--brokers N] [--keep] [--perf SECONDS]
#                       [--callgrind]
# --brokers N: brokers of the embedded cluster (default 1, as tools/demo.sh); every client
# keeps one fetch loop per broker, which the mock brokers park for fetch.wait.max.ms.
# --perf S records `perf record -g` of the dispatcher, a worker and PostgreSQL for S seconds
# in the middle of the run (reports kept in the run directory, with --keep).
# --callgrind runs the dispatcher under valgrind's callgrind, instrumented only while the
# measured requests run (no warm-up then), and prints its instructions per request: a count
# that, unlike CPU time, does not move with the machine's load (use a small --in-flight,
# the dispatcher runs some 50 times slower; callgrind_annotate reads the kept profile).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
in_flight=200 latency=50 duration=20 warmup=5 keep=0 perf=0 callgrind=0 brokers=1 cfg_in=$root/deploy/gantry.local.json
while [ $# -gt 0 ]; do
    case $1 in
    --in-flight) in_flight=$2; shift 2 ;;
    --latency-ms) latency=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --config) cfg_in=$2; shift 2 ;;
    --brokers) brokers=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    --perf) perf=$2; shift 2 ;;
    --callgrind) callgrind=1; warmup=0; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "closedloop.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
[ -f build/build.ninja ] || meson setup build >/dev/null
ninja -C build >/dev/null
B=$root/build

run=$(mktemp -d /tmp/gantry-closedloop.XXXXXX)
chmod 755 "$run"
pids=()
cleanup() {
    # Newest first: Gantry's processes drain against a live Kafka (with the
    # broker gone each waits out its drain time), then the mock and Kafka.
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        kill -TERM "${pids[i]}" 2>/dev/null || true
        wait "${pids[i]}" 2>/dev/null || true
    done
    bash tests/pg.sh stop "$run/pg" >/dev/null 2>&1 || true
    [ "$keep" = 1 ] && echo "closedloop: logs kept in $run" || rm -rf "$run"
}
trap cleanup EXIT
wait_line() {
    local file=$1 prefix=$2 deadline=$((SECONDS + 30))
    while [ $SECONDS -lt $deadline ]; do
        if grep -q "^$prefix=" "$file" 2>/dev/null; then
            grep -m1 "^$prefix=" "$file" | cut -d= -f2-
            return 0
        fi
        sleep 0.1
    done
    echo "closedloop: timed out waiting for $prefix in $file" >&2
    return 1
}

"$B/tools/gantry-kafka-dev" --brokers "$brokers" >"$run/kafka.out" 2>"$run/kafka.log" & pids+=($!); kafka_pid=$!
eval "$(bash tests/pg.sh start "$run/pg" 2>"$run/pg.log")"
"$B/tools/gantry-mock-openai" --port 0 --latency-ms "$latency-$latency" \
    >"$run/mock.out" 2>"$run/mock.log" & pids+=($!); mock_pid=$!
export GANTRY_KAFKA=$(wait_line "$run/kafka.out" bootstrap)
mock_addr=$(wait_line "$run/mock.out" listening)
psql -q -h "$GANTRY_TEST_PGHOST" -p "$GANTRY_TEST_PGPORT" -U gantry -d postgres -c "CREATE DATABASE gantry"
export GANTRY_PG="host=$GANTRY_TEST_PGHOST port=$GANTRY_TEST_PGPORT user=gantry dbname=gantry"
pg_pid=$(head -1 "$run/pg/data/postmaster.pid" 2>/dev/null || head -1 "$(find "$run/pg" -name postmaster.pid | head -1)")
cfg=$run/gantry.json
python3 - "$cfg_in" "$cfg" "http://$mock_addr" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
for k in ("pools", "models", "routing"):
    c.pop(k, None)
c["providers"] = {"mock": {"runtime": "openai", "endpoint": sys.argv[3], "api_key": "bench"}}
c["models"] = {"bench-model": {"provider": "mock", "lane": "bench"}}
c["routing"] = {"rules": [], "default": "bench-model"}
c.setdefault("log", {})["level"] = "warn"
json.dump(c, open(sys.argv[2], "w"), indent=1)
PY

"$B/tools/gantry" migrate --config "$cfg"
wrap=()
[ "$callgrind" = 1 ] && wrap=(valgrind --tool=callgrind --instr-atstart=no
                              --callgrind-out-file="$run/callgrind.dispatcher")
"${wrap[@]}" "$B/dispatcher/gantry-dispatcher" --config "$cfg" 2>"$run/dispatcher.log" &
pids+=($!); disp_pid=$!
"$B/workers/gantry-worker" --config "$cfg" --id worker-1 >/dev/null 2>"$run/worker-1.log" & pids+=($!); w1_pid=$!
"$B/workers/gantry-worker" --config "$cfg" --id worker-2 >/dev/null 2>"$run/worker-2.log" & pids+=($!); w2_pid=$!

# Start once the pipeline answers: one request through end to end (the first group joins
# wait out the embedded cluster's initial rebalance delay).
"$B/bench/gantry-bench-closedloop" --bootstrap "$GANTRY_KAFKA" --in-flight 1 --warmup 0 \
    --duration 15 --latency-ms "$latency" >/dev/null 2>&1 || true
if [ "$perf" != 0 ]; then
    ( sleep $((warmup + 2))
      pg_backends=$(pgrep -d, -P "$pg_pid")
      for p in disp:$disp_pid w1:$w1_pid pg:$pg_backends; do
          perf record -g -o "$run/perf.${p%%:*}.data" -p "${p#*:}" -- sleep "$perf" >/dev/null 2>&1 &
      done
      wait ) & perf_job=$!
fi
echo "loadavg: $(cat /proc/loadavg)"
[ "$callgrind" = 1 ] && callgrind_control -i on "$disp_pid" >/dev/null 2>&1
"$B/bench/gantry-bench-closedloop" --bootstrap "$GANTRY_KAFKA" --in-flight "$in_flight" \
    --warmup "$warmup" --duration "$duration" --latency-ms "$latency" \
    --proc dispatcher=$disp_pid --proc worker-1=$w1_pid --proc worker-2=$w2_pid \
    --proc postgres=$pg_pid+ --proc kafka=$kafka_pid --proc mock=$mock_pid | tee "$run/closedloop.out"
if [ "$callgrind" = 1 ]; then
    # Off before the dump: the requests still in flight when the driver stopped add a little.
    callgrind_control -i off "$disp_pid" >/dev/null 2>&1
    callgrind_control -d "$disp_pid" >/dev/null 2>&1
    deadline=$((SECONDS + 60)) # the dump is written once the process takes the command
    while ! grep -qs '^totals:' "$run"/callgrind.dispatcher.* && [ $SECONDS -lt $deadline ]; do
        sleep 0.2
    done
    done_n=$(awk '/^  completed/{print $2}' "$run/closedloop.out")
    ir=$(cat "$run"/callgrind.dispatcher.* | awk '/^totals:/{s+=$2} END{print s+0}')
    awk -v ir="$ir" -v n="$done_n" 'BEGIN{printf "  dispatcher       %.0f instructions per request (callgrind, %d requests)\n", ir / n, n}'
fi
if [ "$perf" != 0 ]; then
    wait "$perf_job" || true
    for f in "$run"/perf.*.data; do
        perf report -i "$f" --no-children --percent-limit 1.5 --stdio 2>/dev/null \
            | grep -v '^$' | head -60 >"${f%.data}.txt" || true
    done
    echo "closedloop: perf reports in $run/perf.*.txt"
fi
