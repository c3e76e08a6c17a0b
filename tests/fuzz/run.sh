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
# The scrubber needs only pii.c, scrub.c, buf.c, jansson and libcrypto.
if ! "$CC" "${flags[@]}" "$here/fuzz_scrub.c" "$src/dispatcher/pii.c" "$src/dispatcher/scrub.c" "$src/lib/buf.c" \
    $(pkg-config --cflags --libs jansson libcrypto) -o "$out/fuzz_scrub"; then
    echo "fuzz: cannot build fuzz_scrub (is libFuzzer installed: libclang-rt-dev?)" >&2
    exit 2
fi
work="$out/corpus_scrub"
mkdir -p "$work"
cp -n "$here"/corpus_scrub/* "$work"/ 2>/dev/null || true
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
"$out/fuzz_scrub" -max_total_time="$secs" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$out/" "$work" 2>"$out/fuzz_scrub.log" || {
    tail -50 "$out/fuzz_scrub.log" >&2
    echo "fuzz: fuzz_scrub failed; reproducer in $out/" >&2
    exit 1
}
grep -E "^stat::number_of_executed_units|^stat::peak_rss_mb" "$out/fuzz_scrub.log" || true
echo "fuzz: fuzz_scrub ran ${secs}s without a finding"
