#!/bin/sh
# ledger.sh - the ledger benchmark in one command: a throwaway PostgreSQL (unless
# GANTRY_TEST_PGHOST/PORT point at one), a fresh database migrated with
# `gantry migrate`, the example price book, then gantry-bench-ledger: 1,000,000
# usage events through the ledger's statement and the invoice run for 10,000
# tenants. Extra arguments go to gantry-bench-ledger (--events N --tenants T ...).
# The throwaway server gets production-like memory and WAL settings
# (shared_buffers 1GB, max_wal_size 4GB; tests/pg.sh's defaults are 128MB and
# 1GB, fine for tests): with 128MB a month of usage and its indexes do not fit,
# so pages are written out and read back during the run, and a checkpoint
# falls in the middle of it. GANTRY_PG_OPTS adds to them.
#
#   bash bench/ledger.sh [--events N] [--tenants T] [--batch B] [--in-flight F] [--connections K] [--budgets]
#       [--statement FILE]   (a variant of the ledger's statement; see bench/ledger_instr.sh)
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
build=${GANTRY_BUILD_DIR:-$here/build}
[ -x "$build/bench/gantry-bench-ledger" ] || { meson setup "$build" >/dev/null 2>&1 || true; ninja -C "$build" >/dev/null; }
started=""
if [ -z "${GANTRY_TEST_PGHOST:-}" ]; then
    pgdir=$(mktemp -d /tmp/gantry-bench-ledger-pg.XXXXXX)
    chmod 755 "$pgdir"
    eval "$(GANTRY_PG_OPTS="-c shared_buffers=1GB -c max_wal_size=4GB ${GANTRY_PG_OPTS:-}" \
        sh "$here/tests/pg.sh" start "$pgdir")"
    started=$pgdir
fi
# the throwaway server and its cluster go (a million rows leave ~800MB behind)
cleanup() {
    if [ -n "$started" ]; then
        sh "$here/tests/pg.sh" stop "$started" >/dev/null 2>&1
        rm -rf "$started"
    fi
    rm -rf "${cfgdir:-}"
}
trap cleanup EXIT
db=bench_ledger_$$
psql -q -h "$GANTRY_TEST_PGHOST" -p "$GANTRY_TEST_PGPORT" -U gantry -d postgres -c "CREATE DATABASE $db"
conninfo="host=$GANTRY_TEST_PGHOST port=$GANTRY_TEST_PGPORT user=gantry dbname=$db"
cfgdir=$(mktemp -d)
printf '{"kafka": {"bootstrap_servers": "127.0.0.1:1"}, "postgres": {"conninfo": "%s"}, "pools": {}, "models": {}}\n' \
    "$conninfo" > "$cfgdir/gantry.json"
"$build/tools/gantry" migrate --config "$cfgdir/gantry.json" >/dev/null 2>&1
"$build/tools/gantry" prices load --file "$here/deploy/prices.example.json" --config "$cfgdir/gantry.json"
echo "loadavg: $(cat /proc/loadavg)"
psql -Atq -h "$GANTRY_TEST_PGHOST" -p "$GANTRY_TEST_PGPORT" -U gantry -d "$db" \
    -c "SELECT 'server: shared_buffers ' || current_setting('shared_buffers') || ', max_wal_size ' || current_setting('max_wal_size')"
"$build/bench/gantry-bench-ledger" --conninfo "$conninfo" "$@"
echo "loadavg: $(cat /proc/loadavg)"
psql -q -h "$GANTRY_TEST_PGHOST" -p "$GANTRY_TEST_PGPORT" -U gantry -d postgres -c "DROP DATABASE $db"
