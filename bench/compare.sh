#!/usr/bin/env bash
# compare.sh - Gantry beside a peer gateway, back to back on one machine, against the same
# OpenAI-compatible mock (gantry-mock-openai, fixed latency) at the same number of requests in
# flight: wrk straight at the mock, wrk through the Portkey AI gateway (npm @portkey-ai/gateway,
# installed into bench/portkey/, not globally), and bench/closedloop.sh through Gantry (its own
# mock, same binary and latency). Prints one table: requests/s, ratio to direct, added p50/p99
# over the provider's latency. Installs wrk with apt-get when it is missing.
#   bench/compare.sh [--in-flight N] [--latency-ms L] [--duration S] [--portkey-version V]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
in_flight=200 latency=50 duration=20 pk_version=1.15.2
while [ $# -gt 0 ]; do
    case $1 in
    --in-flight) in_flight=$2; shift 2 ;;
    --latency-ms) latency=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --portkey-version) pk_version=$2; shift 2 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "compare.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

# ---- tools
if ! command -v wrk >/dev/null; then
    echo "compare: installing wrk (Debian)" >&2
    apt-get install -y wrk >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }
fi
pk_dir=$root/bench/portkey
pk_server=$pk_dir/node_modules/@portkey-ai/gateway/build/start-server.js
if [ ! -f "$pk_server" ] || ! grep -q "\"version\": \"$pk_version\"" \
        "$pk_dir/node_modules/@portkey-ai/gateway/package.json" 2>/dev/null; then
    echo "compare: installing @portkey-ai/gateway@$pk_version into bench/portkey" >&2
    mkdir -p "$pk_dir"
    npm install --prefix "$pk_dir" --no-audit --no-fund --loglevel=error \
        "@portkey-ai/gateway@$pk_version" >/dev/null
fi
[ -f build/build.ninja ] || meson setup build >/dev/null
ninja -C build >/dev/null
B=$root/build

run=$(mktemp -d /tmp/gantry-compare.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$run"
}
trap cleanup EXIT
wait_for() { # wait_for FILE PATTERN: the first matching line, within 30 s
    local deadline=$((SECONDS + 30))
    while [ $SECONDS -lt $deadline ]; do
        if grep -q "$2" "$1" 2>/dev/null; then grep -m1 "$2" "$1"; return 0; fi
        sleep 0.1
    done
    echo "compare: timed out waiting for '$2' in $1" >&2
    return 1
}

"$B/tools/gantry-mock-openai" --port 0 --latency-ms "$latency-$latency" \
    >"$run/mock.out" 2>"$run/mock.log" & pids+=($!)
mock=$(wait_for "$run/mock.out" '^listening=' | cut -d= -f2)
pk_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
node "$pk_server" --port="$pk_port" --headless >"$run/portkey.log" 2>&1 & pids+=($!)
deadline=$((SECONDS + 30))
until curl -s -o /dev/null "http://127.0.0.1:$pk_port/"; do
    [ $SECONDS -lt $deadline ] || { echo "compare: portkey did not start" >&2; cat "$run/portkey.log" >&2; exit 1; }
    sleep 0.2
done

# One chat completion, as the Gantry path sends it (bench/closedloop's requests).
cat >"$run/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"model":"bench-model","messages":[{"role":"user","content":"hello from the bench"}],"max_tokens":16}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer bench"
LUA
# Portkey routes by headers: the provider, and the mock as a custom host (loopback is trusted).
pk_headers=(-H "x-portkey-provider: openai" -H "x-portkey-custom-host: http://$mock/v1")

# Both routes must answer a real completion before they are measured.
for url in "http://$mock/v1/chat/completions" "http://127.0.0.1:$pk_port/v1/chat/completions"; do
    extra=()
    [[ $url == *":$pk_port/"* ]] && extra=("${pk_headers[@]}")
    body=$(curl -s -H "Content-Type: application/json" -H "Authorization: Bearer bench" "${extra[@]}" \
        -d '{"model":"bench-model","messages":[{"role":"user","content":"hi"}],"max_tokens":16}' "$url")
    if ! grep -q '"choices"' <<<"$body"; then
        echo "compare: $url did not answer a completion: $body" >&2
        exit 1
    fi
done

threads=$(nproc)
echo "loadavg before: $(cat /proc/loadavg)"
wrk_run() { # wrk_run NAME URL [headers...]: prints "NAME req/s p50_ms p99_ms errors"
    local name=$1 url=$2; shift 2
    wrk -t"$threads" -c"$in_flight" -d"${duration}s" --latency -s "$run/post.lua" "$@" "$url" \
        >"$run/wrk.$name.txt" 2>&1
    python3 - "$name" "$run/wrk.$name.txt" <<'PY'
import re, sys
t = open(sys.argv[2]).read()
def ms(v, unit):
    return float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]
lat = dict((p, ms(v, u)) for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s|m)\s*$", t, re.M))
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
errs = 0
m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", t)
errs += int(m.group(1)) if m else 0
m = re.search(r"Socket errors:(.*)", t)
errs += sum(int(x) for x in re.findall(r"\d+", m.group(1))) if m else 0
print(sys.argv[1], rps, lat["50"], lat["99"], errs)
PY
    grep -E "Socket errors|Non-2xx" "$run/wrk.$name.txt" | sed "s/^ */compare: $name: /" >&2 || true
}
direct=$(wrk_run direct "http://$mock/v1/chat/completions")
portkey=$(wrk_run portkey "http://127.0.0.1:$pk_port/v1/chat/completions" "${pk_headers[@]}")
for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
pids=()

bash bench/closedloop.sh --in-flight "$in_flight" --latency-ms "$latency" --duration "$duration" \
    >"$run/closedloop.txt" 2>&1 || { cat "$run/closedloop.txt" >&2; exit 1; }
gantry=$(python3 - "$run/closedloop.txt" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
rps = float(re.search(r"requests/s\s+([\d.]+)", t).group(1))
m = re.search(r"end to end\s+p50 ([\d.]+) ms, p99 ([\d.]+) ms", t)
print("gantry", rps, m.group(1), m.group(2), 0)
PY
)
echo "loadavg after: $(cat /proc/loadavg)"

python3 - "$in_flight" "$latency" "$duration" "$direct" "$portkey" "$gantry" <<'PY'
import sys
n, lat, dur = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
rows = [r.split() for r in sys.argv[4:]]
names = {"direct": "wrk -> mock (direct)", "portkey": "wrk -> Portkey gateway -> mock",
         "gantry": "bench/closedloop -> Gantry (Kafka, dispatcher, workers) -> mock"}
direct = float(rows[0][1])
print(f"\n{n} in flight, mock latency {lat:.0f} ms, {dur} s each (ideal {n * 1000 / lat:,.0f} req/s)\n")
print("| path | req/s | ÷ direct | added over %.0f ms, p50 / p99 | errors |" % lat)
print("|---|---|---|---|---|")
for name, rps, p50, p99, errs in rows:
    rps, p50, p99 = float(rps), float(p50), float(p99)
    print(f"| {names[name]} | {rps:,.0f} | {rps / direct:.2f} | {p50 - lat:+.1f} / {p99 - lat:+.1f} ms | {errs} |")
PY
