#!/usr/bin/env bash
# run.sh - builds the libFuzzer targets with clang (fuzzer, ASan, UBSan) and
# runs each for a bounded time. Usage: tests/fuzz/run.sh [seconds per target]
# (default 60). Installs nothing: needs clang with libFuzzer (Debian: clang,
# libclang-rt-dev) and the development packages the project builds with.
# Exits non-zero on a crash, leak or sanitizer report.
set -euo pipefail
secs="${1:-60}"
here="$(cd "$(dirname "$0")" && pwd)"
src="$(cd "$here/../.." && pwd)"
out="${GANTRY_FUZZ_DIR:-/tmp/gantry-fuzz}"
CC="${CLANG:-clang}"
command -v "$CC" >/dev/null || { echo "fuzz: $CC not found (apt-get install clang libclang-rt-dev)" >&2; exit 2; }
mkdir -p "$out"
flags=(-g -O1 -std=c11 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined
       -fno-sanitize-recover=undefined -I"$src/lib" -I"$src/dispatcher")
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

# fuzz NAME MAX_LEN SOURCES... : builds fuzz_NAME from its sources and
# jansson + libcrypto, then runs it on a copy of corpus_NAME.
fuzz() {
    local name=$1 max_len=$2
    shift 2
    if ! "$CC" "${flags[@]}" "$here/fuzz_$name.c" "$@" \
        $(pkg-config --cflags --libs jansson libcrypto) -lm -o "$out/fuzz_$name"; then
        echo "fuzz: cannot build fuzz_$name (is libFuzzer installed: libclang-rt-dev?)" >&2
        exit 2
    fi
    local work="$out/corpus_$name"
    mkdir -p "$work"
    cp -n "$here/corpus_$name"/* "$work"/ 2>/dev/null || true
    "$out/fuzz_$name" -max_total_time="$secs" -max_len="$max_len" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$out/" "$work" 2>"$out/fuzz_$name.log" || {
        tail -50 "$out/fuzz_$name.log" >&2
        echo "fuzz: fuzz_$name failed; reproducer in $out/" >&2
        exit 1
    }
    grep -E "^stat::number_of_executed_units|^stat::peak_rss_mb" "$out/fuzz_$name.log" || true
    echo "fuzz: fuzz_$name ran ${secs}s without a finding"
}

# The scrubber needs only pii.c, scrub.c, buf.c, jansson and libcrypto.
fuzz scrub 4096 "$src/dispatcher/pii.c" "$src/dispatcher/scrub.c" "$src/lib/buf.c"
# The JSON text, against jansson's parser and serialiser.
fuzz json 8192 "$src/lib/json_text.c"
