/* pg.c - asynchronous PostgreSQL on libuv (pipeline mode, reconnect) and blocking migrations. */
#include "pg.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "metrics.h"
#include "rand.h"
#include "retry.h"

#define PG_BACKOFF_MIN_MS 100
#define PG_BACKOFF_MAX_MS 5000
/* A server that accepts TCP but never answers must not hold queries forever. */
#define PG_CONNECT_TIMEOUT_MS 10000
/* Key of the advisory lock that serialises concurrent migration runs
 * ("gantry" in ASCII). */
#define PG_MIGRATE_LOCK "113723809871993"

typedef struct pg_query {
    struct pg_query *next;
    char *sql;
    int nparams;
    char **params;
    int *lengths; /* with formats: gt_pg_query_bin's, NULL for text parameters */
    int *formats;
    gt_pg_cb cb;
    void *arg;
    PGresult *last; /* last successful result received on this connection */
    char *err;      /* first error received on this connection */
    int got_end;    /* NULLs ending a command's results received so far */
    int ends;       /* NULLs to expect before the sync: 2 when a Prepare went first */
    int stmt;       /* index of its prepared statement, or -1 */
    int internal;   /* the handle's own (DISCARD PLANS): never prepared, not in pending */
    int prepare_failed;
    char sqlstate[6]; /* of err, "" when it had none */
    int transient;    /* err is transient: the query is sent again, not answered */
} pg_query_t;

/* Statements are prepared once per connection and then sent by name: parsing
 * and planning the same SQL for every call cost the server more than running
 * it. A statement is known by its text; gen says on which connection it was
 * prepared. Past PG_STMT_MAX distinct texts, queries go unnamed. */
#define PG_STMT_MAX 128
/* A prepared statement keeps the generic plan built at its first calls, when
 * the tables of a new deployment (or a benchmark) were nearly empty: a seq
 * scan that then reads the whole table per call (the workers' cancel poll
 * took 34 ms and the coordinator's "complete" 18 ms a call in
 * bench/closedloop, 20 s after start; autovacuum's first ANALYZE, which would
 * invalidate them, comes up to a minute later). So after PG_REPLAN_FIRST
 * queries on a handle, then after twice as many each time (at most
 * PG_REPLAN_MAX apart), a DISCARD PLANS goes first: plans are rebuilt for the
 * tables' size then. */
#define PG_REPLAN_FIRST 256
#define PG_REPLAN_MAX (1 << 20)
typedef struct pg_stmt {
    char *sql;
    size_t len;
    unsigned gen;
} pg_stmt_t;

/* A poll handle lives in its own allocation: a reconnect can replace it
 * while the old one is still closing, and it is freed in its close callback. */
typedef struct pg_poll {
    uv_poll_t h;
    int fd;
    int events;
} pg_poll_t;

enum { PG_IDLE, PG_CONNECTING, PG_READY, PG_CLOSED };

/* A host name being resolved on libuv's thread pool (libpq would call
 * getaddrinfo inside PQconnectStart, on the loop thread). Abandoned (pg
 * NULL) when the connect times out or the handle is freed first. */
typedef struct pg_resolve {
    uv_getaddrinfo_t req;
    gt_pg_t *pg;
} pg_resolve_t;

#define PG_DNS_LIST 2048

struct gt_pg {
    uv_loop_t *loop;
    char *conninfo;
    PGconn *conn;
    int state;
    pg_poll_t *poll;
    uv_timer_t timer; /* reconnect backoff, then connect timeout */
    int backoff_ms;   /* the next reconnect's delay (for the log) */
    int failures;     /* consecutive failed connections or transient errors */
    int want_write;   /* PQflush left data in the output buffer */

    pg_query_t *head, *tail; /* every unanswered query, in the order issued */
    pg_query_t *unsent;      /* first query not sent on this connection */
    int pending;

    pg_stmt_t stmts[PG_STMT_MAX];
    int n_stmts;
    unsigned conn_gen; /* bumped on every new connection */
    uint64_t issued;   /* queries issued on this handle */
    uint64_t replan_at, replan_step;

    /* Set when conninfo names a host to resolve: every connect resolves the
     * names again (a failover may move them) and connects by hostaddr, with
     * host kept for TLS verification and SNI. */
    PQconninfoOption *opts;
    char **names, **ports; /* host and port lists, split on commas */
    int n_names, n_ports;
    int resolve_i;   /* host entry being resolved */
    int dns_entries; /* entries in the dns_ lists */
    pg_resolve_t *resolving;
    char dns_host[PG_DNS_LIST], dns_addr[PG_DNS_LIST], dns_port[PG_DNS_LIST];
    char dns_err[256];
};

static void pg_on_poll(uv_poll_t *h, int status, int events);
static void pg_on_timer(uv_timer_t *t);
static void pg_connect_start(gt_pg_t *pg);
static void pg_broken(gt_pg_t *pg, const char *why);
static int pg_send_unsent(gt_pg_t *pg);
static int pg_flush(gt_pg_t *pg);
static void pg_read(gt_pg_t *pg);
static int pg_check(gt_pg_t *pg);

/* Copies s without the trailing newline libpq puts on its messages. */
static char *dup_msg(const char *s)
{
    char *d = strdup(s && *s ? s : "unknown error");
    if (d) {
        size_t n = strlen(d);
        while (n > 0 && (d[n - 1] == '\n' || d[n - 1] == ' '))
            d[--n] = '\0';
    }
    return d;
}

static void query_free(pg_query_t *q)
{
    if (!q)
        return;
    for (int i = 0; i < q->nparams; i++)
        free(q->params[i]);
    free(q->params);
    free(q->lengths);
    free(q->formats);
    free(q->sql);
    PQclear(q->last);
    free(q->err);
    free(q);
}

/* Forgets what a query received on a connection that is gone. */
static void query_reset(pg_query_t *q)
{
    PQclear(q->last);
    q->last = NULL;
    free(q->err);
    q->err = NULL;
    q->got_end = 0;
    q->prepare_failed = 0;
    q->sqlstate[0] = '\0';
    q->transient = 0;
}

/* The statement slot for sql, added when new; -1 when the table is full.
 * Found by length, then bytes: the texts run to several KiB, and a hash of
 * every byte at each send cost more than the vectorised comparisons. */
static int stmt_find(gt_pg_t *pg, const char *sql)
{
    size_t len = strlen(sql);
    for (int i = 0; i < pg->n_stmts; i++)
        if (pg->stmts[i].len == len && memcmp(pg->stmts[i].sql, sql, len) == 0)
            return i;
    if (pg->n_stmts == PG_STMT_MAX)
        return -1;
    char *copy = strdup(sql);
    if (!copy)
        return -1;
    pg->stmts[pg->n_stmts] = (pg_stmt_t){.sql = copy, .len = len, .gen = 0};
    return pg->n_stmts++;
}

/* Queues q on the connection: by name when its statement is prepared there,
 * else Prepare then execute. Returns 0, or -1 when libpq refused. */
static int query_send(gt_pg_t *pg, pg_query_t *q)
{
    const char *const *params = (const char *const *)q->params;
    char name[16];
    q->stmt = q->internal ? -1 : stmt_find(pg, q->sql);
    q->ends = 1;
    if (q->stmt < 0)
        return PQsendQueryParams(pg->conn, q->sql, q->nparams, NULL, params, q->lengths, q->formats,
                                 0)
                   ? 0
                   : -1;
    pg_stmt_t *st = &pg->stmts[q->stmt];
    snprintf(name, sizeof(name), "gt%d", q->stmt);
    if (st->gen != pg->conn_gen) {
        if (!PQsendPrepare(pg->conn, name, q->sql, q->nparams, NULL))
            return -1;
        st->gen = pg->conn_gen;
        q->ends = 2;
    }
    return PQsendQueryPrepared(pg->conn, name, q->nparams, params, q->lengths, q->formats, 0) ? 0
                                                                                              : -1;
}

static void poll_close_cb(uv_handle_t *h)
{
    free(h);
}

static void poll_drop(gt_pg_t *pg)
{
    if (pg->poll) {
        uv_close((uv_handle_t *)&pg->poll->h, poll_close_cb);
        pg->poll = NULL;
    }
}

/* Watches the connection's current socket for events. libpq may change the
 * socket while connecting, so the handle follows PQsocket. Returns 0 or -1. */
static int pg_watch(gt_pg_t *pg, int events)
{
    int fd = PQsocket(pg->conn);
    if (fd < 0)
        return -1;
    if (pg->poll && pg->poll->fd != fd)
        poll_drop(pg);
    if (!pg->poll) {
        pg_poll_t *p = calloc(1, sizeof(*p));
        if (!p)
            return -1;
        if (uv_poll_init(pg->loop, &p->h, fd) != 0) {
            free(p);
            return -1;
        }
        p->fd = fd;
        p->h.data = pg;
        pg->poll = p;
    }
    if (pg->poll->events != events) {
        if (uv_poll_start(&pg->poll->h, events, pg_on_poll) != 0)
            return -1;
        pg->poll->events = events;
    }
    return 0;
}

/* The delay before the next connection: 100 ms doubling to 5 s, +-25 %
 * jitter so that the dispatchers of a fleet do not reconnect in step. */
static void pg_next_backoff(gt_pg_t *pg)
{
    gt_retry_policy_t p = {
        .base_ms = PG_BACKOFF_MIN_MS, .max_ms = PG_BACKOFF_MAX_MS, .jitter = 0.5};
    pg->failures++;
    pg->backoff_ms = (int)gt_retry_backoff_ms(&p, pg->failures, -1, gt_rand_unit());
}

static void pg_schedule_reconnect(gt_pg_t *pg)
{
    pg->state = PG_IDLE;
    uv_timer_start(&pg->timer, pg_on_timer, (uint64_t)pg->backoff_ms, 0);
}

/* The SQLSTATE class label of gantry_pg_retries_total: the first two
 * characters, or 25006 itself (class 25 is otherwise permanent). */
static void pg_count_retries(const char *sqlstate, int n)
{
    char cls[6];
    if (n <= 0)
        return;
    if (strcmp(sqlstate, "25006") == 0)
        snprintf(cls, sizeof(cls), "25006");
    else
        snprintf(cls, sizeof(cls), "%.2s", sqlstate);
    gt_metric_add(gt_metrics_counter("gantry_pg_retries_total",
                                     "PostgreSQL statements sent again after a transient failure,"
                                     " by SQLSTATE class (08: connection lost)",
                                     "class"),
                  (double)n, cls);
}

/* Drops the connection; every unanswered query will be sent again on the
 * next one, after the backoff. sqlstate says why (08006 for a lost
 * connection). */
static void pg_drop(gt_pg_t *pg, const char *sqlstate, const char *why)
{
    int sent = 0;
    for (pg_query_t *q = pg->head; q && q != pg->unsent; q = q->next)
        sent++;
    pg_next_backoff(pg);
    pg_count_retries(sqlstate, sent);
    if (strncmp(sqlstate, "08", 2) == 0)
        gt_warn("postgres: connection lost (%s), %d quer%s to resend, retry in %d ms", why,
                pg->pending, pg->pending == 1 ? "y" : "ies", pg->backoff_ms);
    else
        gt_warn("postgres: transient error %s (%s): reconnecting in %d ms, %d quer%s to resend",
                sqlstate, why, pg->backoff_ms, pg->pending, pg->pending == 1 ? "y" : "ies");
    poll_drop(pg);
    if (pg->conn) {
        PQfinish(pg->conn);
        pg->conn = NULL;
    }
    pg->want_write = 0;
    for (pg_query_t *q = pg->head; q; q = q->next)
        query_reset(q);
    pg->unsent = pg->head;
    pg_schedule_reconnect(pg);
}

static void pg_broken(gt_pg_t *pg, const char *why)
{
    pg_drop(pg, "08006", why);
}

static void pg_resolve_abandon(gt_pg_t *pg)
{
    if (pg->resolving) {
        pg->resolving->pg = NULL; /* its callback frees it */
        uv_cancel((uv_req_t *)&pg->resolving->req);
        pg->resolving = NULL;
    }
}

static void pg_connect_failed(gt_pg_t *pg)
{
    pg_next_backoff(pg);
    pg_resolve_abandon(pg);
    char *msg = dup_msg(pg->conn         ? PQerrorMessage(pg->conn)
                        : pg->dns_err[0] ? pg->dns_err
                                         : "out of memory");
    gt_warn("postgres: connect failed: %s; retry in %d ms", msg ? msg : "?", pg->backoff_ms);
    free(msg);
    poll_drop(pg);
    if (pg->conn) {
        PQfinish(pg->conn);
        pg->conn = NULL;
    }
    pg_schedule_reconnect(pg);
}

/* Server notices go to the structured log (libpq would print them raw on
 * stderr), primary message only: a notice's context may quote values. */
static void on_notice(void *arg, const PGresult *res)
{
    (void)arg;
    const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    const char *m = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    gt_log(sev && strcmp(sev, "WARNING") == 0 ? GT_LOG_WARN : GT_LOG_DEBUG, NULL, "postgres %s: %s",
           sev ? sev : "notice", m ? m : "");
}

static int is_literal_host(const char *h)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return !*h || h[0] == '/' || h[0] == '@' || inet_pton(AF_INET, h, buf) == 1 ||
           inet_pton(AF_INET6, h, buf) == 1;
}

/* Splits a comma-separated list into a new array of *n strings, or NULL. */
static char **split_list(const char *s, int *n)
{
    int count = 1;
    for (const char *p = s; *p; p++)
        count += *p == ',';
    char **out = calloc((size_t)count, sizeof(char *));
    if (!out)
        return NULL;
    *n = 0;
    for (const char *p = s;; p++) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (!(out[*n] = malloc(len + 1)))
            break;
        memcpy(out[*n], p, len);
        out[(*n)++][len] = '\0';
        if (!e)
            break;
        p = e;
    }
    return out;
}

static void free_list(char **l, int n)
{
    for (int i = 0; i < n; i++)
        free(l[i]);
    free(l);
}

static const char *opt_val(const PQconninfoOption *o, const char *kw)
{
    for (; o && o->keyword; o++)
        if (strcmp(o->keyword, kw) == 0)
            return o->val;
    return NULL;
}

/* Decides at start whether connects resolve host names themselves: only when
 * conninfo (or PGHOST) names a host that is not an address or a socket
 * directory and gives no hostaddr. Otherwise conninfo goes to libpq as is. */
static void pg_dns_setup(gt_pg_t *pg)
{
    char *err = NULL;
    PQconninfoOption *o = PQconninfoParse(pg->conninfo, &err);
    if (!o) { /* libpq says why when it connects */
        PQfreemem(err);
        return;
    }
    const char *host = opt_val(o, "host"), *hostaddr = opt_val(o, "hostaddr");
    const char *port = opt_val(o, "port");
    if (!host)
        host = getenv("PGHOST");
    if (!hostaddr)
        hostaddr = getenv("PGHOSTADDR");
    int need = 0;
    if (host && !(hostaddr && *hostaddr) && (pg->names = split_list(host, &pg->n_names)))
        for (int i = 0; i < pg->n_names; i++)
            need |= !is_literal_host(pg->names[i]);
    if (!need) {
        free_list(pg->names, pg->n_names);
        pg->names = NULL;
        pg->n_names = 0;
        PQconninfoFree(o);
        return;
    }
    if (port && strchr(port, ','))
        pg->ports = split_list(port, &pg->n_ports);
    if (pg->n_ports != pg->n_names) { /* one port for all: libpq applies it */
        free_list(pg->ports, pg->n_ports);
        pg->ports = NULL;
        pg->n_ports = 0;
    }
    pg->opts = o;
}

/* One host entry per address of names[i] (addr "" for a literal host). */
static void pg_dns_add(gt_pg_t *pg, int i, const char *addr)
{
    size_t hl = strlen(pg->dns_host), al = strlen(pg->dns_addr), pl = strlen(pg->dns_port);
    const char *port = pg->ports ? pg->ports[i] : "";
    if (hl + strlen(pg->names[i]) + 2 >= PG_DNS_LIST || al + strlen(addr) + 2 >= PG_DNS_LIST ||
        pl + strlen(port) + 2 >= PG_DNS_LIST)
        return; /* more addresses than fit: the first ones are enough */
    const char *sep = pg->dns_entries ? "," : "";
    snprintf(pg->dns_host + hl, PG_DNS_LIST - hl, "%s%s", sep, pg->names[i]);
    snprintf(pg->dns_addr + al, PG_DNS_LIST - al, "%s%s", sep, addr);
    if (pg->ports)
        snprintf(pg->dns_port + pl, PG_DNS_LIST - pl, "%s%s", sep, port);
    pg->dns_entries++;
}

static void pg_connect_go(gt_pg_t *pg);
static void pg_resolve_next(gt_pg_t *pg);

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    pg_resolve_t *r = (pg_resolve_t *)req;
    gt_pg_t *pg = r->pg;
    free(r);
    if (!pg) {
        uv_freeaddrinfo(res);
        return;
    }
    pg->resolving = NULL;
    const char *name = pg->names[pg->resolve_i];
    if (status != 0)
        gt_warn("postgres: cannot resolve %s: %s", name, uv_strerror(status));
    for (struct addrinfo *ai = status == 0 ? res : NULL; ai; ai = ai->ai_next) {
        char ip[INET6_ADDRSTRLEN];
        if (uv_ip_name(ai->ai_addr, ip, sizeof(ip)) == 0)
            pg_dns_add(pg, pg->resolve_i, ip);
    }
    uv_freeaddrinfo(res);
    pg->resolve_i++;
    pg_resolve_next(pg);
}

/* Resolves the next host name, or connects once all are done. */
static void pg_resolve_next(gt_pg_t *pg)
{
    while (pg->resolve_i < pg->n_names && is_literal_host(pg->names[pg->resolve_i]))
        pg_dns_add(pg, pg->resolve_i++, "");
    if (pg->resolve_i == pg->n_names) {
        if (pg->dns_entries == 0) {
            snprintf(pg->dns_err, sizeof(pg->dns_err), "no address for host %s",
                     pg->n_names ? pg->names[0] : "?");
            pg_connect_failed(pg);
            return;
        }
        pg_connect_go(pg);
        return;
    }
    pg_resolve_t *r = calloc(1, sizeof(*r));
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    int rc =
        r ? uv_getaddrinfo(pg->loop, &r->req, on_resolved, pg->names[pg->resolve_i], NULL, &hints)
          : UV_ENOMEM;
    if (rc != 0) {
        free(r);
        gt_warn("postgres: cannot resolve %s: %s", pg->names[pg->resolve_i], uv_strerror(rc));
        pg->resolve_i++;
        pg_resolve_next(pg);
        return;
    }
    r->pg = pg;
    pg->resolving = r;
}

static void pg_connect_start(gt_pg_t *pg)
{
    pg->state = PG_CONNECTING;
    if (pg->opts) {
        pg->dns_host[0] = pg->dns_addr[0] = pg->dns_port[0] = '\0';
        pg->dns_err[0] = '\0';
        pg->dns_entries = 0;
        pg->resolve_i = 0;
        uv_timer_start(&pg->timer, pg_on_timer, PG_CONNECT_TIMEOUT_MS, 0);
        pg_resolve_next(pg);
        return;
    }
    pg->conn = PQconnectStart(pg->conninfo);
    pg_connect_go(pg);
}

/* Connects with the resolved lists, or goes on with the connection that
 * PQconnectStart began. */
static void pg_connect_go(gt_pg_t *pg)
{
    if (pg->opts) {
        const char *kw[96], *val[96];
        int n = 0;
        for (PQconninfoOption *o = pg->opts; o->keyword && n < 90; o++) {
            if (!o->val || strcmp(o->keyword, "host") == 0 || strcmp(o->keyword, "hostaddr") == 0 ||
                (pg->ports && strcmp(o->keyword, "port") == 0))
                continue;
            kw[n] = o->keyword;
            val[n++] = o->val;
        }
        kw[n] = "host";
        val[n++] = pg->dns_host;
        kw[n] = "hostaddr";
        val[n++] = pg->dns_addr;
        if (pg->ports) {
            kw[n] = "port";
            val[n++] = pg->dns_port;
        }
        kw[n] = val[n] = NULL;
        pg->conn = PQconnectStartParams(kw, val, 0);
    }
    if (!pg->conn || PQstatus(pg->conn) == CONNECTION_BAD) {
        pg_connect_failed(pg);
        return;
    }
    PQsetNoticeReceiver(pg->conn, on_notice, NULL);
    /* PQconnectStart behaves as if PQconnectPoll had asked for writable. */
    if (pg_watch(pg, UV_WRITABLE) != 0) {
        pg_connect_failed(pg);
        return;
    }
    uv_timer_start(&pg->timer, pg_on_timer, PG_CONNECT_TIMEOUT_MS, 0);
}

/* Statements are prepared so that they are not planned per call, but by
 * default PostgreSQL plans a statement again for each call whenever that
 * plan looks cheaper than the generic one: a batch statement (pgbatch) was
 * planned again at 43 % of its calls in bench/closedloop, ~10 ms a time,
 * its whole JSON parameter folded in. So every session runs the generic
 * plans (rebuilt as tables grow: PG_REPLAN_FIRST). The SET goes first on
 * each connection, as the handle's own query (one left from a connection
 * that broke is not queued twice). */
static const char pg_sql_generic[] = "SET plan_cache_mode = force_generic_plan";

static void pg_generic_plans(gt_pg_t *pg)
{
    if (pg->head && pg->head->internal && strcmp(pg->head->sql, pg_sql_generic) == 0)
        return;
    pg_query_t *q = calloc(1, sizeof(*q));
    if (!q || !(q->sql = strdup(pg_sql_generic))) {
        free(q); /* out of memory: per-call plans, as PostgreSQL chooses */
        return;
    }
    q->internal = 1;
    q->next = pg->head;
    pg->head = q;
    if (!pg->tail)
        pg->tail = q;
}

static void pg_connect_step(gt_pg_t *pg)
{
    switch (PQconnectPoll(pg->conn)) {
    case PGRES_POLLING_READING:
        if (pg_watch(pg, UV_READABLE) != 0)
            pg_connect_failed(pg);
        return;
    case PGRES_POLLING_WRITING:
        if (pg_watch(pg, UV_WRITABLE) != 0)
            pg_connect_failed(pg);
        return;
    case PGRES_POLLING_OK: break;
    default: pg_connect_failed(pg); return;
    }
    if (PQsetnonblocking(pg->conn, 1) != 0 || PQenterPipelineMode(pg->conn) != 1) {
        pg_connect_failed(pg);
        return;
    }
    uv_timer_stop(&pg->timer);
    pg->state = PG_READY;
    pg->conn_gen++;
    gt_info("postgres: connected");
    pg_generic_plans(pg);
    pg->unsent = pg->head;
    if (pg_send_unsent(pg) != 0)
        return;
    if (pg->state == PG_READY &&
        pg_watch(pg, UV_READABLE | (pg->want_write ? UV_WRITABLE : 0)) != 0)
        pg_broken(pg, "poll");
}

static void pg_on_timer(uv_timer_t *t)
{
    gt_pg_t *pg = t->data;
    if (pg->state == PG_IDLE) {
        pg_connect_start(pg);
    } else if (pg->state == PG_CONNECTING) {
        gt_warn("postgres: connect timed out after %d ms", PG_CONNECT_TIMEOUT_MS);
        pg_connect_failed(pg);
    }
}

/* Sends what libpq buffered. Returns 0, or -1 when the connection broke. */
static int pg_flush(gt_pg_t *pg)
{
    int r = PQflush(pg->conn);
    if (r < 0) {
        pg_broken(pg, "flush");
        return -1;
    }
    pg->want_write = r == 1;
    return 0;
}

/* Sends every query not yet sent on this connection, each followed by a sync
 * so that it is its own transaction and an error aborts only itself.
 * Returns 0, or -1 when the connection broke. */
static int pg_send_unsent(gt_pg_t *pg)
{
    int sent = 0;
    while (pg->unsent) {
        pg_query_t *q = pg->unsent;
        if (query_send(pg, q) != 0 || !PQpipelineSync(pg->conn)) {
            char *msg = dup_msg(PQerrorMessage(pg->conn));
            pg_broken(pg, msg ? msg : "send");
            free(msg);
            return -1;
        }
        pg->unsent = q->next;
        sent = 1;
    }
    if (sent || pg->want_write)
        return pg_flush(pg);
    return 0;
}

/* Removes the first query and answers it. The implicit transaction of a
 * pipelined statement commits at its sync, so a query is answered only then. */
static void pg_complete_head(gt_pg_t *pg)
{
    pg_query_t *q = pg->head;
    pg->head = q->next;
    if (!pg->head)
        pg->tail = NULL;
    pg->pending -= !q->internal;
    /* A statement that failed to prepare (say, its table is not there yet) is
     * prepared again by the next query that uses it. */
    if (q->prepare_failed && q->stmt >= 0)
        pg->stmts[q->stmt].gen = 0;
    if (q->cb) {
        if (q->err)
            q->cb(NULL, q->err, q->arg);
        else
            q->cb(q->last, NULL, q->arg);
    }
    query_free(q);
}

/* Reads every result available and matches it to the sent queries. */
static void pg_read(gt_pg_t *pg)
{
    if (!PQconsumeInput(pg->conn)) {
        char *msg = dup_msg(PQerrorMessage(pg->conn));
        pg_broken(pg, msg ? msg : "read");
        free(msg);
        return;
    }
    /* Results only arrive for sent queries: with none sent, PQgetResult
     * would return NULL forever. */
    while (pg->state == PG_READY && pg->head && pg->head != pg->unsent && !PQisBusy(pg->conn)) {
        pg_query_t *q = pg->head;
        PGresult *res = PQgetResult(pg->conn);
        if (!res) {
            if (q->got_end >= q->ends)
                break; /* not expected; wait for more input rather than spin */
            q->got_end++;
            continue;
        }
        ExecStatusType st = PQresultStatus(res);
        switch (st) {
        case PGRES_PIPELINE_SYNC:
            PQclear(res);
            if (q->err && q->transient) {
                /* Sent again, with everything after it, on a new connection:
                 * answers keep their order, and a new session finds a
                 * failover's new primary and the role's current settings. */
                char why[300];
                snprintf(why, sizeof(why), "%s", q->err);
                pg_drop(pg, q->sqlstate, why);
                return;
            }
            pg->failures = 0; /* the connection does work */
            pg_complete_head(pg);
            continue;
        case PGRES_TUPLES_OK:
        case PGRES_COMMAND_OK:
        case PGRES_EMPTY_QUERY:
            if (!q->err) {
                PQclear(q->last);
                q->last = res;
                res = NULL;
            }
            break;
        case PGRES_PIPELINE_ABORTED:
            /* Cannot happen with one sync per query, unless a previous
             * statement of the same segment failed: report it. */
            if (!q->err)
                q->err = dup_msg("pipeline aborted by an earlier error");
            break;
        case PGRES_FATAL_ERROR:
        default:
            if (q->ends == 2 && q->got_end == 0)
                q->prepare_failed = 1;
            if (!q->err) {
                /* The primary message and SQLSTATE only: DETAIL and CONTEXT quote
                 * parameter values (a JSON error quotes the document, i.e. prompts
                 * and outputs), and callers log this text. */
                const char *m = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
                const char *code = PQresultErrorField(res, PG_DIAG_SQLSTATE);
                if (code && strlen(code) == 5) {
                    memcpy(q->sqlstate, code, 6);
                    q->transient = gt_pg_sqlstate_transient(code);
                }
                char buf[512];
                snprintf(buf, sizeof(buf), "%s%s%s", code ? code : "", code ? ": " : "",
                         m && *m ? m : PQresStatus(st));
                q->err = dup_msg(buf);
            }
            break;
        }
        PQclear(res);
    }
}

/* libpq closes the socket itself when it sees the connection fail, inside
 * whichever call noticed: drop the watcher before the fd number is reused.
 * Returns 0, or -1 when the connection is gone. */
static int pg_check(gt_pg_t *pg)
{
    if (pg->state != PG_READY)
        return -1;
    if (PQstatus(pg->conn) == CONNECTION_BAD || PQsocket(pg->conn) < 0) {
        char *msg = dup_msg(PQerrorMessage(pg->conn));
        pg_broken(pg, msg ? msg : "connection bad");
        free(msg);
        return -1;
    }
    return 0;
}

static void pg_on_poll(uv_poll_t *h, int status, int events)
{
    gt_pg_t *pg = h->data;
    if (pg->state == PG_CONNECTING) {
        /* Errors show up in PQconnectPoll. */
        pg_connect_step(pg);
        return;
    }
    if (pg->state != PG_READY)
        return;
    if (status < 0) {
        /* libuv reports a socket error (POLLERR) this way: let libpq read
         * what it can so the log says why. */
        pg_read(pg);
        if (pg->state == PG_READY)
            pg_broken(pg, uv_strerror(status));
        return;
    }
    if (events & UV_READABLE) {
        pg_read(pg);
        if (pg_check(pg) != 0)
            return;
    }
    if (pg_send_unsent(pg) != 0 || pg_check(pg) != 0)
        return;
    if (pg_watch(pg, UV_READABLE | (pg->want_write ? UV_WRITABLE : 0)) != 0)
        pg_broken(pg, "poll");
}

int gt_pg_sqlstate_transient(const char *sqlstate)
{
    if (!sqlstate || strlen(sqlstate) != 5)
        return 0;
    return strncmp(sqlstate, "08", 2) == 0 || strncmp(sqlstate, "40", 2) == 0 ||
           strncmp(sqlstate, "53", 2) == 0 || strncmp(sqlstate, "57", 2) == 0 ||
           strcmp(sqlstate, "25006") == 0;
}

int gt_pg_err_sqlstate(const char *err, char out[6])
{
    out[0] = '\0';
    if (!err)
        return -1;
    for (int i = 0; i < 5; i++)
        if (!((err[i] >= '0' && err[i] <= '9') || (err[i] >= 'A' && err[i] <= 'Z')))
            return -1;
    if (err[5] != ':' || err[6] != ' ')
        return -1;
    memcpy(out, err, 5);
    out[5] = '\0';
    return 0;
}

gt_pg_t *gt_pg_new(uv_loop_t *loop, const char *conninfo)
{
    gt_pg_t *pg = calloc(1, sizeof(*pg));
    if (!pg)
        return NULL;
    pg->loop = loop;
    pg->backoff_ms = PG_BACKOFF_MIN_MS;
    pg->replan_at = pg->replan_step = PG_REPLAN_FIRST;
    pg->conninfo = strdup(conninfo ? conninfo : "");
    if (!pg->conninfo) {
        free(pg);
        return NULL;
    }
    uv_timer_init(loop, &pg->timer);
    pg->timer.data = pg;
    pg_dns_setup(pg);
    pg_connect_start(pg);
    return pg;
}

/* Queues one query (gt_pg_query_bin's contract, its arguments checked; cb
 * NULL: nobody is answered; internal: the handle's own, not in pending). */
static int pg_enqueue(gt_pg_t *pg, const char *sql, int nparams, const char *const *params,
                      const int *lengths, const int *formats, gt_pg_cb cb, void *arg, int internal)
{
    pg_query_t *q = calloc(1, sizeof(*q));
    if (!q)
        return -1;
    q->cb = cb;
    q->arg = arg;
    q->internal = internal;
    q->sql = strdup(sql);
    if (!q->sql)
        goto fail;
    if (nparams > 0) {
        q->params = calloc((size_t)nparams, sizeof(char *));
        if (!q->params)
            goto fail;
        q->nparams = nparams;
        if (formats) {
            q->lengths = calloc((size_t)nparams, sizeof(int));
            q->formats = calloc((size_t)nparams, sizeof(int));
            if (!q->lengths || !q->formats)
                goto fail;
        }
        for (int i = 0; i < nparams; i++) {
            int bin = formats && formats[i];
            if (bin && params[i] && lengths[i] < 0)
                goto fail;
            /* a binary value is copied by its length (+1: a zero length is no NULL) */
            size_t len = bin ? (size_t)lengths[i] : 0;
            if (!params[i])
                continue;
            if (bin) {
                if (!(q->params[i] = malloc(len + 1)))
                    goto fail;
                memcpy(q->params[i], params[i], len);
                q->lengths[i] = lengths[i];
                q->formats[i] = 1;
            } else if (!(q->params[i] = strdup(params[i]))) {
                goto fail;
            }
        }
    }
    if (pg->tail)
        pg->tail->next = q;
    else
        pg->head = q;
    pg->tail = q;
    if (!pg->unsent)
        pg->unsent = q;
    pg->pending += !internal;
    if (pg->state == PG_READY && pg_send_unsent(pg) == 0 && pg_check(pg) == 0 &&
        pg_watch(pg, UV_READABLE | (pg->want_write ? UV_WRITABLE : 0)) != 0)
        pg_broken(pg, "poll");
    return 0;
fail:
    query_free(q);
    return -1;
}

int gt_pg_query(gt_pg_t *pg, const char *sql, int nparams, const char *const *params, gt_pg_cb cb,
                void *arg)
{
    return gt_pg_query_bin(pg, sql, nparams, params, NULL, NULL, cb, arg);
}

int gt_pg_query_bin(gt_pg_t *pg, const char *sql, int nparams, const char *const *params,
                    const int *lengths, const int *formats, gt_pg_cb cb, void *arg)
{
    /* 65535: the protocol's limit; beyond it libpq refuses the send, which
     * would otherwise look like a broken connection. */
    if (!pg || !sql || nparams < 0 || nparams > 65535 || pg->state == PG_CLOSED ||
        (formats && !lengths))
        return -1;
    if (++pg->issued >= pg->replan_at) {
        /* Its own statement (and transaction): should it fail, no caller's
         * query fails with it. Out of memory: tried at the next query. */
        if (pg_enqueue(pg, "DISCARD PLANS", 0, NULL, NULL, NULL, NULL, NULL, 1) == 0) {
            pg->replan_at += pg->replan_step;
            if (pg->replan_step < PG_REPLAN_MAX)
                pg->replan_step *= 2;
        }
    }
    return pg_enqueue(pg, sql, nparams, params, lengths, formats, cb, arg, 0);
}

int gt_pg_connected(const gt_pg_t *pg)
{
    return pg && pg->state == PG_READY;
}

int gt_pg_pending(const gt_pg_t *pg)
{
    return pg ? pg->pending : 0;
}

static void timer_close_cb(uv_handle_t *h)
{
    gt_pg_t *pg = h->data;
    for (int i = 0; i < pg->n_stmts; i++)
        free(pg->stmts[i].sql);
    PQconninfoFree(pg->opts);
    free_list(pg->names, pg->n_names);
    free_list(pg->ports, pg->n_ports);
    free(pg->conninfo);
    free(pg);
}

void gt_pg_free(gt_pg_t *pg)
{
    if (!pg || pg->state == PG_CLOSED)
        return;
    pg->state = PG_CLOSED;
    pg_resolve_abandon(pg);
    poll_drop(pg);
    if (pg->conn) {
        PQfinish(pg->conn);
        pg->conn = NULL;
    }
    /* Callbacks may issue queries: gt_pg_query refuses them once closed. */
    while (pg->head) {
        pg_query_t *q = pg->head;
        pg->head = q->next;
        pg->pending -= !q->internal;
        if (q->cb)
            q->cb(NULL, "closed", q->arg);
        query_free(q);
    }
    pg->tail = pg->unsent = NULL;
    uv_timer_stop(&pg->timer);
    uv_close((uv_handle_t *)&pg->timer, timer_close_cb);
}

/* ---- blocking helpers ------------------------------------------------- */

PGconn *gt_pg_connect_sync(const char *conninfo, char *err, size_t errlen)
{
    PGconn *conn = PQconnectdb(conninfo ? conninfo : "");
    if (!conn) {
        snprintf(err, errlen, "postgres: out of memory");
        return NULL;
    }
    if (PQstatus(conn) != CONNECTION_OK) {
        char *msg = dup_msg(PQerrorMessage(conn));
        snprintf(err, errlen, "postgres: %s", msg ? msg : "connection failed");
        free(msg);
        PQfinish(conn);
        return NULL;
    }
    return conn;
}

/* Runs sql (possibly several statements); on failure writes "what: message"
 * into err. Returns 0 or -1. */
static int exec_ok(PGconn *conn, const char *sql, const char *what, char *err, size_t errlen)
{
    PGresult *res = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(res);
    int rc = 0;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && st != PGRES_EMPTY_QUERY) {
        char *msg = dup_msg(res ? PQresultErrorMessage(res) : PQerrorMessage(conn));
        snprintf(err, errlen, "%s: %s", what, msg ? msg : "failed");
        free(msg);
        rc = -1;
    }
    PQclear(res);
    return rc;
}

static int is_migration_name(const char *n)
{
    size_t len = strlen(n);
    if (len < 8) /* "NNN_" + ".sql" */
        return 0;
    for (int i = 0; i < 3; i++)
        if (n[i] < '0' || n[i] > '9')
            return 0;
    return n[3] == '_' && strcmp(n + len - 4, ".sql") == 0;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Reads a whole file into a NUL-terminated buffer, or NULL (errno set). */
static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t len = 0, cap = 0;
    if (!f)
        return NULL;
    for (;;) {
        if (cap - len < 4096) {
            cap = cap ? cap * 2 : 16384;
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                buf = NULL;
                goto out;
            }
            buf = nb;
        }
        size_t n = fread(buf + len, 1, cap - len - 1, f);
        len += n;
        if (n == 0)
            break;
    }
    if (ferror(f)) {
        free(buf);
        buf = NULL;
        goto out;
    }
    buf[len] = '\0';
out:
    fclose(f);
    return buf;
}

/* Applies one migration file if its version is not recorded yet. Returns 1
 * when applied, 0 when already there, -1 on error (rolled back). */
static int migrate_one(PGconn *conn, const char *dir, const char *name, char *err, size_t errlen)
{
    char path[4096], version[4];
    char *sql = NULL;
    PGresult *res = NULL;
    int rc = -1;

    memcpy(version, name, 3);
    version[3] = '\0';
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    sql = read_file(path);
    if (!sql) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno ? errno : ENOMEM));
        return -1;
    }
    /* The lock makes concurrent runs apply each file once: the second waits,
     * then sees the version row. */
    if (exec_ok(conn, "BEGIN; SELECT pg_advisory_xact_lock(" PG_MIGRATE_LOCK ")", name, err,
                errlen) != 0)
        goto out;
    const char *params[2] = {version, name};
    res = PQexecParams(conn, "SELECT 1 FROM gantry_schema_migrations WHERE version = $1::int", 1,
                       NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        char *msg = dup_msg(PQresultErrorMessage(res));
        snprintf(err, errlen, "%s: %s", name, msg ? msg : "failed");
        free(msg);
        goto out;
    }
    if (PQntuples(res) > 0) {
        rc = 0;
        goto out;
    }
    PQclear(res);
    res = NULL;
    if (exec_ok(conn, sql, name, err, errlen) != 0)
        goto out;
    res = PQexecParams(conn,
                       "INSERT INTO gantry_schema_migrations (version, name) VALUES ($1::int, $2)",
                       2, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        char *msg = dup_msg(PQresultErrorMessage(res));
        snprintf(err, errlen, "%s: %s", name, msg ? msg : "failed");
        free(msg);
        goto out;
    }
    if (exec_ok(conn, "COMMIT", name, err, errlen) != 0)
        goto out;
    rc = 1;
out:
    PQclear(res);
    /* Ends the transaction after a failure or a skip; harmless otherwise. */
    if (rc != 1 && PQtransactionStatus(conn) != PQTRANS_IDLE)
        PQclear(PQexec(conn, "ROLLBACK"));
    free(sql);
    return rc;
}

int gt_pg_migrate(PGconn *conn, const char *dir, char *err, size_t errlen)
{
    DIR *d = NULL;
    char **names = NULL;
    size_t n = 0, cap = 0;
    int applied = 0, rc = -1;

    errno = 0;
    if (!(d = opendir(dir))) {
        snprintf(err, errlen, "%s: %s", dir, strerror(errno));
        goto out;
    }
    for (struct dirent *e; (e = readdir(d));) {
        if (!is_migration_name(e->d_name))
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            char **nn = realloc(names, cap * sizeof(*names));
            if (!nn) {
                snprintf(err, errlen, "out of memory");
                goto out;
            }
            names = nn;
        }
        if (!(names[n] = strdup(e->d_name))) {
            snprintf(err, errlen, "out of memory");
            goto out;
        }
        n++;
    }
    if (n > 0)
        qsort(names, n, sizeof(*names), cmp_names);
    for (size_t i = 1; i < n; i++) {
        if (strncmp(names[i - 1], names[i], 3) == 0) {
            snprintf(err, errlen, "%s: %s and %s share version %.3s", dir, names[i - 1], names[i],
                     names[i]);
            goto out;
        }
    }
    /* Under the lock, so two first runs don't both create the table. */
    if (exec_ok(conn,
                "BEGIN;"
                "SELECT pg_advisory_xact_lock(" PG_MIGRATE_LOCK ");"
                "SET LOCAL client_min_messages = warning;"
                "CREATE TABLE IF NOT EXISTS gantry_schema_migrations ("
                "  version int PRIMARY KEY,"
                "  name text NOT NULL,"
                "  applied_at timestamptz NOT NULL DEFAULT now());"
                "COMMIT",
                "gantry_schema_migrations", err, errlen) != 0) {
        if (PQtransactionStatus(conn) != PQTRANS_IDLE)
            PQclear(PQexec(conn, "ROLLBACK"));
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        int r = migrate_one(conn, dir, names[i], err, errlen);
        if (r < 0)
            goto out;
        if (r > 0)
            gt_info("migrate: applied %s", names[i]);
        applied += r;
    }
    rc = applied;
out:
    if (d)
        closedir(d);
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return rc;
}
