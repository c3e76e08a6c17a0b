#!/usr/bin/env bash
# run.sh - the test suite from a fresh machine: install packages, build with
# -Werror, start a throwaway PostgreSQL, run every test (unit and end to end),
# then the fault suite as its own step.
#   tests/run.sh            normal build in build/
#   tests/run.sh --asan     ASan+UBSan build in build-asan/
set -euo pipefail
cd "$(dirname "$0")/.."

builddir=build
opts=(-Dwerror=true)
if [ "${1:-}" = "--asan" ]; then
    builddir=build-asan
    opts+=(-Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug)
fi

bash tools/setup.sh
# The official openai and @anthropic-ai/sdk packages, pinned by package-lock.json
# (e2e_batch_api drives gantry-api with them).
(cd tests/sdk && npm ci --no-audit --no-fund --loglevel=error)
if [ ! -f "$builddir/build.ninja" ]; then
    meson setup "$builddir" "${opts[@]}" >/dev/null
fi
ninja -C "$builddir"

pgdir=$(mktemp -d /tmp/gantry-pg.XXXXXX)
trap 'bash tests/pg.sh stop "$pgdir" >/dev/null 2>&1 || true; rm -rf "$pgdir"' EXIT
eval "$(bash tests/pg.sh start "$pgdir")"
export GANTRY_TEST_PGHOST GANTRY_TEST_PGPORT
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
meson test -C "$builddir" --print-errorlogs --num-processes 2 --no-suite fault
# The fault suite (tests/fault/): each case holds a fault for up to 60 s on its
# own cluster and PostgreSQL server, two side by side; not repeated under ASan
# (the cases run minutes of real traffic).
if [ "${1:-}" != "--asan" ]; then
    meson test -C "$builddir" --print-errorlogs --num-processes 2 --suite fault
fi
