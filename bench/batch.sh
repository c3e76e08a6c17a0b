#!/usr/bin/env bash
# batch.sh - bench/batch: LINES (default 50,000) OpenAI batch lines through
# gantry-api and the real pipeline; prints create-to-completed time, requests/s
# and the peak RSS of gantry-api and the dispatcher. Needs a build in build/,
# tests/sdk's node_modules (npm ci) and a throwaway PostgreSQL (started here).
set -euo pipefail
cd "$(dirname "$0")/.."
pgdir=$(mktemp -d /tmp/gantry-pg.XXXXXX)
trap 'bash tests/pg.sh stop "$pgdir" >/dev/null 2>&1 || true; rm -rf "$pgdir"' EXIT
eval "$(bash tests/pg.sh start "$pgdir")"
export GANTRY_TEST_PGHOST GANTRY_TEST_PGPORT
export GANTRY_BUILD_DIR=$PWD/build GANTRY_SOURCE_DIR=$PWD
build/bench/gantry-bench-batch "${1:-50000}"
