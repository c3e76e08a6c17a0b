/* pg.h - asynchronous PostgreSQL on a libuv loop: one non-blocking connection
 * in pipeline mode, queries answered in the order sent. */
#ifndef GT_PG_H
#define GT_PG_H

#include <libpq-fe.h>
#include <uv.h>

typedef struct gt_pg gt_pg_t;

/* res is the query's last result (PGRES_TUPLES_OK / PGRES_COMMAND_OK), or NULL
 * with err set when the statement failed permanently. err is then
 * "SSSSS: primary message" with the SQLSTATE first (gt_pg_err_sqlstate), or
 * "closed" when gt_pg_free failed the query (the process is stopping: not the
 * query's fault). Transient failures never reach the callback: see
 * gt_pg_query. res is freed after the callback. */
typedef void (*gt_pg_cb)(const PGresult *res, const char *err, void *arg);

/* Connects in the background; queries sent before the connection is up wait.
 * A broken connection is re-established with backoff (100 ms doubling to 5 s,
 * +-25 % jitter; a connect attempt times out after 10 s) and every query not
 * yet answered is sent again, so queries must be idempotent: one whose first
 * attempt committed just before the connection died runs twice. A
 * transient SQL error (gt_pg_sqlstate_transient) is handled the same way: the
 * connection is dropped and the query, with every one after it, is sent again
 * on a new one after the backoff, for as long as it takes (counted in
 * gantry_pg_retries_total{class}). So a statement that always times out holds
 * the queries behind it until the fault clears or the handle is freed.
 * docs/operations.md ("PostgreSQL errors") audits every statement of the
 * dispatcher for being safe to run twice. Host names (conninfo's host, or
 * PGHOST, without a hostaddr) are resolved with uv_getaddrinfo on libuv's
 * thread pool before each connect, never by libpq on the loop thread; libpq
 * then gets one host entry per address with its hostaddr, and host kept for
 * TLS verification and SNI. A name that does not resolve is a failed connect
 * (retried). Returns NULL on out of memory. */
gt_pg_t *gt_pg_new(uv_loop_t *loop, const char *conninfo);

/* Sends one statement (its own implicit transaction) with text parameters
 * (NULL entries are SQL NULL). Copies sql and params. Returns 0 or -1 (out of
 * memory, closed, bad arguments: cb is then never called). Otherwise cb runs
 * exactly once, on the loop, after the statement committed or failed, in the
 * order queries were issued; never from inside gt_pg_query. cb may issue
 * queries or call gt_pg_free. */
int gt_pg_query(gt_pg_t *pg, const char *sql, int nparams, const char *const *params, gt_pg_cb cb,
                void *arg);
/* gt_pg_query with some parameters in binary (the type's send format, e.g. a
 * binary array for $1::bigint[]): where formats[i] is 1, params[i] is
 * lengths[i] bytes (copied); elsewhere text as above. formats NULL: all text.
 * Same outcome and failures as gt_pg_query, and -1 for formats without
 * lengths or a negative length. */
int gt_pg_query_bin(gt_pg_t *pg, const char *sql, int nparams, const char *const *params,
                    const int *lengths, const int *formats, gt_pg_cb cb, void *arg);

/* 1 when sqlstate names a transient failure: class 08 (connection), 40
 * (serialization, deadlock), 53 (insufficient resources), 57 (operator
 * intervention, 57014 statement timeout) or 25006 (read-only transaction:
 * a failover's old primary). 0 for anything else, NULL included. */
int gt_pg_sqlstate_transient(const char *sqlstate);
/* Copies the SQLSTATE that starts a callback's err ("23505: duplicate key
 * ...") into out. Returns 0, or -1 (out = "") when err carries none: "closed",
 * or a caller's own text. */
int gt_pg_err_sqlstate(const char *err, char out[6]);

/* 1 once connected (for readiness), 0 otherwise. */
int gt_pg_connected(const gt_pg_t *pg);
/* Queries sent or waiting, not yet answered. */
int gt_pg_pending(const gt_pg_t *pg);

/* Fails pending queries (err "closed"), closes handles; frees once closed. */
void gt_pg_free(gt_pg_t *pg);

/* Blocking helpers for command-line tools (never on a loop). */
PGconn *gt_pg_connect_sync(const char *conninfo, char *err, size_t errlen);
/* Applies migrations/NNN_*.sql from dir not yet in gantry_schema_migrations,
 * each in its own transaction. Returns the number applied, or -1 (err set). */
/* Files are applied in name order, each with its version row in one
 * transaction under an advisory lock, so concurrent runs apply each once and
 * a failed file leaves nothing behind (earlier files stay applied). Files must
 * not contain BEGIN/COMMIT; two files with the same NNN are refused. */
int gt_pg_migrate(PGconn *conn, const char *dir, char *err, size_t errlen);

#endif
