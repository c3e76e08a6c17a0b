#!/bin/sh
# ledger_instr.sh - instructions per event of the ledger's statement in the
# PostgreSQL backend: a count, not a time, so that it does not move with the
# load of a shared machine (wall and CPU figures of bench/ledger.sh move by
# 10-30 % between identical runs at load 2-5; this moves by < 0.5 %).
#
#   bash bench/ledger_instr.sh [FILE...]
#
# For the ledger's own statement (gantry-bench-ledger --print-statement) and
# each FILE (a variant with the same 22 parameters, as for
# `bench/ledger.sh --statement FILE`): a throwaway cluster is migrated and
# given the example price book, then `postgres --single` runs under callgrind
# the statement PREPAREd and EXECUTEd over 8 and over 24 batches of 500 events
# shaped as bench/ledger's (one transaction each); the figure is the
# difference divided by 16 x 500 events, so start-up, planning and the first
# executions cancel out. The arrays arrive as SQL literals rather than bound
# parameters, and single-user mode reads its input a byte at a time: both add
# about the same to every variant (~16k instructions per event), so compare
# variants with each other, not with bench/ledger.sh's microseconds.
# Needs valgrind and python3; runs as root (the cluster's owner is postgres)
# or as the postgres user. About 20 s per statement.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
build=${GANTRY_BUILD_DIR:-$here/build}
[ -x "$build/bench/gantry-bench-ledger" ] || ninja -C "$build" >/dev/null
PGBIN=${PGBIN:-$(pg_config --bindir 2>/dev/null || echo /usr/lib/postgresql/15/bin)}
[ -x "$PGBIN/postgres" ] || PGBIN=/usr/lib/postgresql/15/bin
command -v valgrind >/dev/null || { echo "ledger_instr.sh: needs valgrind" >&2; exit 1; }
work=$(mktemp -d /tmp/gantry-ledger-instr.XXXXXX)
chmod 755 "$work"
cleanup() {
    sh "$here/tests/pg.sh" stop "$work/pg" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
as_owner() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

mkdir "$work/pg" "$work/out"
chmod 777 "$work/out" # callgrind writes there as the cluster's owner
eval "$(sh "$here/tests/pg.sh" start "$work/pg" 2>/dev/null)"
psql -q -h "$GANTRY_TEST_PGHOST" -p "$GANTRY_TEST_PGPORT" -U gantry -d postgres -c "CREATE DATABASE instr"
printf '{"kafka": {"bootstrap_servers": "127.0.0.1:1"}, "postgres": {"conninfo": "host=%s port=%s user=gantry dbname=instr"}, "pools": {}, "models": {}}\n' \
    "$GANTRY_TEST_PGHOST" "$GANTRY_TEST_PGPORT" > "$work/gantry.json"
"$build/tools/gantry" migrate --config "$work/gantry.json" >/dev/null 2>&1
"$build/tools/gantry" prices load --file "$here/deploy/prices.example.json" --config "$work/gantry.json" >/dev/null
sh "$here/tests/pg.sh" stop "$work/pg" >/dev/null 2>&1
"$build/bench/gantry-bench-ledger" --print-statement > "$work/ledger.sql"

# batches of 500 events as bench/ledger.c makes them, in last month's partition
gen() { # gen SQLFILE NBATCHES
    python3 - "$1" "$2" <<'EOF'
import datetime, sys
sql = open(sys.argv[1]).read()
nb, bs = int(sys.argv[2]), 500
now = datetime.datetime.now(datetime.timezone.utc)
first = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
month = (first - datetime.timedelta(days=1)).replace(day=1)
ms0 = int(month.timestamp() * 1000)
q = lambda s: '"' + s + '"'
out = ["PREPARE s AS " + sql + ";\n\n"]
for b in range(nb):
    cols = [[] for _ in range(22)]
    for i in range(bs):
        k = b * bs + i
        req = "bench-%d" % k
        at = datetime.datetime.fromtimestamp((ms0 + (k * 2333) % (27 * 86400000)) / 1000,
                                             datetime.timezone.utc)
        ats = at.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (at.microsecond // 1000)
        vals = [q("bench-%d/0:usage" % k), q(req), q("bench-%d/0" % k),
                q("tenant-%05d" % (k % 10000)), q("llama-3.1-8b" if k % 3 else "llama-3.1-70b"),
                q("hostedai"), q("gpu-pool-a"), q(req), "%.17g" % (0.05 + (k % 100) / 1000.0),
                "%.17g" % (20.0 if k % 3 else 80.0), str(16000 if k % 3 else 80000),
                str(50 + k % 500), str(20 + k % 200), "400", "900", "1", "10", "40", "5", "55",
                q(ats), "NULL"]
        for c, v in zip(cols, vals):
            c.append(v)
    out.append("EXECUTE s(%s);\n\n" % ",".join("'{" + ",".join(c) + "}'" for c in cols))
sys.stdout.write("".join(out))
EOF
}

count() { # count SQLFILE NBATCHES: instructions of the whole single-user run
    rm -rf "$work/run" "$work/out/cg.out"
    cp -a "$work/pg/data" "$work/run"
    gen "$1" "$2" > "$work/script.sql"
    chmod 644 "$work/script.sql"
    as_owner valgrind --tool=callgrind --callgrind-out-file="$work/out/cg.out" \
        "$PGBIN/postgres" --single -D "$work/run" -c fsync=off -c shared_buffers=256MB -j instr \
        < "$work/script.sql" > "$work/run.log" 2>&1
    if grep -q ERROR "$work/run.log"; then
        grep -m 3 ERROR "$work/run.log" >&2
        return 1
    fi
    sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$work/run.log"
}

for f in "$work/ledger.sql" "$@"; do
    a=$(count "$f" 8)
    b=$(count "$f" 24)
    name=$f
    [ "$f" = "$work/ledger.sql" ] && name="the ledger's statement"
    echo "$name: $(( (b - a) / (16 * 500) )) instructions per event"
done
