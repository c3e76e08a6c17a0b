#!/bin/sh
# pg.sh - start/stop a throwaway PostgreSQL 15 for tests (as an unprivileged user when root).
#
#   eval "$(tests/pg.sh start DIR)"   # prints: export GANTRY_TEST_PGHOST=127.0.0.1 GANTRY_TEST_PGPORT=N
#   tests/pg.sh stop DIR
#
# DIR holds the cluster (DIR/data), its Unix socket and its log (DIR/postgres.log).
# Superuser "gantry", trust authentication, fsync off: for tests only.
# Everything except the export line goes to stderr. GANTRY_PG_OPTS adds server
# options, e.g. "-c shared_preload_libraries=pg_stat_statements" to profile.
set -eu

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}

usage() {
    echo "usage: $0 start|stop DIR" >&2
    exit 2
}

[ $# -eq 2 ] || usage
cmd=$1
dir=$2

# Runs a command as the cluster owner: postgres when we are root (PostgreSQL
# refuses to run as root), ourselves otherwise.
as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        if command -v runuser >/dev/null 2>&1; then
            runuser -u postgres -- "$@"
        else
            # su needs one command string: quote every argument.
            q=
            for a in "$@"; do
                q="$q '$(printf '%s' "$a" | sed "s/'/'\\\\''/g")'"
            done
            su postgres -s /bin/sh -c "$q"
        fi
    else
        "$@"
    fi
}

# A TCP port nobody listens on right now (bound to 0 and released).
free_port() {
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
    else
        # Fallback: a random high port that refuses connections.
        while :; do
            p=$(( ( $(od -An -N2 -tu2 /dev/urandom) % 20000 ) + 40000 ))
            if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
                echo "$p"
                return
            fi
        done
    fi
}

case $cmd in
start)
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    if [ "$(id -u)" -eq 0 ]; then
        if ! getent passwd postgres >/dev/null; then
            useradd --system --home-dir /var/lib/postgresql --shell /bin/sh postgres >&2
        fi
        chown -R postgres "$dir"
        if ! as_owner test -w "$dir"; then
            echo "pg.sh: $dir is not reachable by user postgres (its parents need o+x)" >&2
            exit 1
        fi
    fi
    # Already running here (a second start): report it again.
    if [ -f "$dir/port" ] && [ -f "$dir/data/PG_VERSION" ] &&
        as_owner "$PGBIN/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
        echo "export GANTRY_TEST_PGHOST=127.0.0.1 GANTRY_TEST_PGPORT=$(cat "$dir/port")"
        exit 0
    fi
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        as_owner "$PGBIN/initdb" -D "$dir/data" -A trust -U gantry -E UTF8 \
            --no-locale --no-sync >"$dir/initdb.log" 2>&1 || {
            echo "pg.sh: initdb failed (see $dir/initdb.log):" >&2
            tail -n 5 "$dir/initdb.log" >&2
            exit 1
        }
    fi
    # The port is free when picked but another process may take it before the
    # server binds it: try a few.
    # A restart (stop, then start on the same DIR) keeps the port, so that
    # clients' conninfo stays valid: tests stop PostgreSQL mid-run.
    tries=0
    while :; do
        if [ $tries -eq 0 ] && [ -f "$dir/port" ]; then
            port=$(cat "$dir/port")
        else
            port=$(free_port)
        fi
        if as_owner "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 \
            -o "-p $port -c listen_addresses=127.0.0.1 -k $dir -c fsync=off -c max_connections=200 ${GANTRY_PG_OPTS:-}" \
            start >&2; then
            break
        fi
        tries=$((tries + 1))
        if [ $tries -ge 3 ]; then
            echo "pg.sh: could not start PostgreSQL (see $dir/postgres.log):" >&2
            tail -n 5 "$dir/postgres.log" >&2 || true
            exit 1
        fi
    done
    echo "$port" >"$dir/port"
    echo "export GANTRY_TEST_PGHOST=127.0.0.1 GANTRY_TEST_PGPORT=$port"
    ;;
stop)
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        echo "pg.sh: no cluster in $dir" >&2
        exit 1
    fi
    dir=$(cd "$dir" && pwd)
    as_owner "$PGBIN/pg_ctl" -D "$dir/data" -m fast -w stop >&2
    ;;
*)
    usage
    ;;
esac
