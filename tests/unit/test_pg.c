/* test_pg.c - async PostgreSQL pipeline (order, errors, reconnect) and migrations, on a real
 * server. */
#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "metrics.h"
#include "pg.h"

/* One answered query, recorded in the order callbacks ran. */
typedef struct answer {
    int idx;
    int ok;
    char value[64];
    char err[256];
} answer_t;

typedef struct rec {
    answer_t *answers;
    int n, cap;
    int out_of_order; /* an answer arrived before an earlier-issued one */
} rec_t;

typedef struct qarg {
    rec_t *rec;
    int idx;
} qarg_t;

static void rec_cb(const PGresult *res, const char *err, void *arg)
{
    qarg_t *a = arg;
    rec_t *r = a->rec;
    if (r->n == r->cap)
        return;
    answer_t *an = &r->answers[r->n];
    if (r->n > 0 && r->answers[r->n - 1].idx >= a->idx)
        r->out_of_order++;
    an->idx = a->idx;
    an->ok = res != NULL && err == NULL;
    if (res && PQntuples(res) > 0 && PQnfields(res) > 0)
        snprintf(an->value, sizeof(an->value), "%s", PQgetvalue(res, 0, PQnfields(res) - 1));
    if (err)
        snprintf(an->err, sizeof(an->err), "%s", err);
    r->n++;
}

static int no_pending(void *arg)
{
    return gt_pg_pending(arg) == 0;
}
static int is_connected(void *arg)
{
    return gt_pg_connected(arg);
}

/* Frees pg and lets its handles close; the loop must end up empty. */
static void pg_close(uv_loop_t *loop, gt_pg_t *pg)
{
    gt_pg_free(pg);
    uv_run(loop, UV_RUN_DEFAULT);
    TH_EQ_INT(uv_loop_close(loop), 0);
}

static int count_migration_files(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    if (!d)
        return -1;
    for (struct dirent *e; (e = readdir(d));) {
        size_t len = strlen(e->d_name);
        if (len >= 8 && e->d_name[0] >= '0' && e->d_name[0] <= '9' && e->d_name[3] == '_' &&
            strcmp(e->d_name + len - 4, ".sql") == 0)
            n++;
    }
    closedir(d);
    return n;
}

static long long scalar(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    long long v = -1;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
        v = atoll(PQgetvalue(r, 0, 0));
    else
        fprintf(stderr, "  %s: %s", sql, PQresultErrorMessage(r));
    PQclear(r);
    return v;
}

static void test_migrate_twice(void)
{
    char ci[512], err[512] = "";
    CU_ASSERT_FATAL(th_pg_create_db(ci, sizeof(ci)) == 0);
    PGconn *c = gt_pg_connect_sync(ci, err, sizeof(err));
    CU_ASSERT_FATAL(c != NULL);
    const char *dir = th_src("migrations");
    int files = count_migration_files(dir);
    CU_ASSERT(files >= 1);

    int n = gt_pg_migrate(c, dir, err, sizeof(err));
    if (n < 0)
        fprintf(stderr, "  migrate: %s\n", err);
    TH_EQ_INT(n, files);
    TH_EQ_INT(gt_pg_migrate(c, dir, err, sizeof(err)), 0);
    TH_EQ_INT(scalar(c, "SELECT count(*) FROM gantry_schema_migrations"), files);
    TH_EQ_INT(scalar(c, "SELECT count(*) FROM jobs"), 0);
    PQfinish(c);
}

static void test_migrate_failure_rolls_back(void)
{
    char ci[512], err[512] = "", dir[] = "/tmp/gantry-mig-XXXXXX", path[600];
    CU_ASSERT_FATAL(th_pg_create_db(ci, sizeof(ci)) == 0);
    CU_ASSERT_FATAL(mkdtemp(dir) != NULL);
    static const char *files[][2] = {
        {"001_a.sql", "CREATE TABLE a (x int);"},
        {"002_b.sql", "CREATE TABLE b (x int);\nTHIS IS NOT SQL;"},
        {"README", "not a migration"},
    };
    for (size_t i = 0; i < 3; i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, files[i][0]);
        FILE *f = fopen(path, "w");
        CU_ASSERT_FATAL(f != NULL);
        fputs(files[i][1], f);
        fclose(f);
    }
    PGconn *c = gt_pg_connect_sync(ci, err, sizeof(err));
    CU_ASSERT_FATAL(c != NULL);
    TH_EQ_INT(gt_pg_migrate(c, dir, err, sizeof(err)), -1);
    CU_ASSERT(strstr(err, "002_b.sql") != NULL);
    /* 001 stays applied; nothing of 002 remains. */
    TH_EQ_INT(scalar(c, "SELECT count(*) FROM gantry_schema_migrations"), 1);
    TH_EQ_INT(scalar(c, "SELECT count(*) FROM pg_tables WHERE tablename = 'b'"), 0);
    TH_EQ_INT(scalar(c, "SELECT count(*) FROM a"), 0);
    CU_ASSERT(PQtransactionStatus(c) == PQTRANS_IDLE);
    PQfinish(c);
    for (size_t i = 0; i < 3; i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, files[i][0]);
        unlink(path);
    }
    rmdir(dir);
}

typedef struct mig_thread {
    const char *ci, *dir;
    int applied;
    char err[512];
} mig_thread_t;

static void *mig_main(void *arg)
{
    mig_thread_t *m = arg;
    PGconn *c = gt_pg_connect_sync(m->ci, m->err, sizeof(m->err));
    m->applied = c ? gt_pg_migrate(c, m->dir, m->err, sizeof(m->err)) : -1;
    PQfinish(c);
    return NULL;
}

static void test_migrate_concurrent(void)
{
    char ci[512];
    CU_ASSERT_FATAL(th_pg_create_db(ci, sizeof(ci)) == 0);
    const char *dir = th_src("migrations");
    int files = count_migration_files(dir);
    mig_thread_t m[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        m[i] = (mig_thread_t){.ci = ci, .dir = dir};
        CU_ASSERT_FATAL(pthread_create(&th[i], NULL, mig_main, &m[i]) == 0);
    }
    int total = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        if (m[i].applied < 0)
            fprintf(stderr, "  migrate %d: %s\n", i, m[i].err);
        CU_ASSERT(m[i].applied >= 0);
        total += m[i].applied;
    }
    TH_EQ_INT(total, files);
}

/* A fresh database holding what create_sql makes, a direct connection to it
 * (*c) and a client on loop (initialised here); the test ends when any of
 * them cannot be had. ci receives the database's conninfo. */
static gt_pg_t *fresh_db(uv_loop_t *loop, char *ci, size_t len, PGconn **c, const char *create_sql)
{
    char err[512];
    CU_ASSERT_FATAL(th_pg_create_db(ci, len) == 0);
    *c = gt_pg_connect_sync(ci, err, sizeof(err));
    CU_ASSERT_FATAL(*c != NULL);
    PQclear(PQexec(*c, create_sql));
    uv_loop_init(loop);
    gt_pg_t *pg = gt_pg_new(loop, ci);
    CU_ASSERT_FATAL(pg != NULL);
    return pg;
}

#define N_PIPELINED 10000

static void test_pipelined_inserts_in_order(void)
{
    char ci[512];
    PGconn *c;
    uv_loop_t loop;
    gt_pg_t *pg = fresh_db(&loop, ci, sizeof(ci), &c, "CREATE TABLE t (i int PRIMARY KEY, v text)");
    rec_t rec = {calloc(N_PIPELINED, sizeof(answer_t)), 0, N_PIPELINED, 0};
    qarg_t *args = calloc(N_PIPELINED, sizeof(qarg_t));
    /* Issued before the connection is up: they wait, then go out in order. */
    for (int i = 0; i < N_PIPELINED; i++) {
        char num[16];
        snprintf(num, sizeof(num), "%d", i);
        const char *p[2] = {num, i % 2 ? NULL : "even"};
        args[i] = (qarg_t){&rec, i};
        TH_EQ_INT(gt_pg_query(pg,
                              "INSERT INTO t VALUES ($1, $2) ON CONFLICT DO NOTHING "
                              "RETURNING i",
                              2, p, rec_cb, &args[i]),
                  0);
    }
    TH_EQ_INT(gt_pg_pending(pg), N_PIPELINED);
    CU_ASSERT(th_loop_until(&loop, no_pending, pg, 60000));
    TH_EQ_INT(rec.n, N_PIPELINED);
    TH_EQ_INT(rec.out_of_order, 0);
    int bad = 0;
    for (int i = 0; i < rec.n; i++)
        if (!rec.answers[i].ok || rec.answers[i].idx != i || atoi(rec.answers[i].value) != i)
            bad++;
    TH_EQ_INT(bad, 0);
    TH_EQ_INT(scalar(c, "SELECT count(*) FROM t"), N_PIPELINED);
    TH_EQ_INT(scalar(c, "SELECT count(*) FROM t WHERE v IS NULL"), N_PIPELINED / 2);
    CU_ASSERT(gt_pg_connected(pg));
    pg_close(&loop, pg);
    free(rec.answers);
    free(args);
    PQfinish(c);
}

/* A query issued from a callback joins the same pipeline. */
typedef struct chain {
    gt_pg_t *pg;
    rec_t *rec;
    qarg_t next;
} chain_t;

static void chain_cb(const PGresult *res, const char *err, void *arg)
{
    chain_t *ch = arg;
    const char *p[1] = {"chained"};
    TH_EQ_INT(gt_pg_query(ch->pg, "SELECT $1::text", 1, p, rec_cb, &ch->next), 0);
}

/* Binary parameters (with a NUL inside, and empty) next to text and NULL
 * ones, the same statement twice: each arrives
 * as sent. */
static void test_binary_parameters(void)
{
    char ci[512];
    CU_ASSERT_FATAL(th_pg_create_db(ci, sizeof(ci)) == 0);
    uv_loop_t loop;
    uv_loop_init(&loop);
    gt_pg_t *pg = gt_pg_new(&loop, ci);
    CU_ASSERT_FATAL(pg != NULL);
    static const char big[8] = {0, 0, 0, 0, 0, 0, 0x01, 0x02}; /* int8 258, network order */
    const char *p[4] = {big, "x\0y", "text", NULL};
    int lengths[4] = {8, 3, 0, 0}, formats[4] = {1, 1, 0, 1};
    const char *sql = "SELECT $1::bigint + 1 || ':' || length($2::bytea) || ':' || $3::text || ':'"
                      " || coalesce($4::int, -1)";
    enum { N = 2 };
    rec_t rec = {calloc(N, sizeof(answer_t)), 0, N, 0};
    qarg_t args[N];
    for (int i = 0; i < N; i++) {
        args[i] = (qarg_t){&rec, i};
        TH_EQ_INT(gt_pg_query_bin(pg, sql, 4, p, lengths, formats, rec_cb, &args[i]), 0);
    }
    /* formats without lengths, or a negative length: refused */
    TH_EQ_INT(gt_pg_query_bin(pg, sql, 4, p, NULL, formats, rec_cb, &args[0]), -1);
    int bad[4] = {8, -1, 0, 0};
    TH_EQ_INT(gt_pg_query_bin(pg, sql, 4, p, bad, formats, rec_cb, &args[0]), -1);
    CU_ASSERT(th_loop_until(&loop, no_pending, pg, 20000));
    TH_EQ_INT(rec.n, N);
    for (int i = 0; i < rec.n; i++)
        TH_EQ_STR(rec.answers[i].value, "259:3:text:-1");
    pg_close(&loop, pg);
    free(rec.answers);
}

static void test_error_fails_only_that_query(void)
{
    char ci[512];
    CU_ASSERT_FATAL(th_pg_create_db(ci, sizeof(ci)) == 0);
    uv_loop_t loop;
    uv_loop_init(&loop);
    gt_pg_t *pg = gt_pg_new(&loop, ci);
    CU_ASSERT_FATAL(pg != NULL);
    CU_ASSERT(th_loop_until(&loop, is_connected, pg, 10000));

    enum { N = 101 };
    rec_t rec = {calloc(N + 1, sizeof(answer_t)), 0, N + 1, 0};
    qarg_t args[N];
    for (int i = 0; i < N; i++) {
        char num[16];
        snprintf(num, sizeof(num), "%d", i);
        const char *p[1] = {num};
        args[i] = (qarg_t){&rec, i};
        const char *sql = i == 50 ? "SELECT 1 / ($1::int - 50)" : "SELECT $1::int";
        TH_EQ_INT(gt_pg_query(pg, sql, 1, p, rec_cb, &args[i]), 0);
    }
    chain_t ch = {pg, &rec, {&rec, N}};
    TH_EQ_INT(gt_pg_query(pg, "SELECT 1", 0, NULL, chain_cb, &ch), 0);
    CU_ASSERT(th_loop_until(&loop, no_pending, pg, 20000));
    TH_EQ_INT(rec.n, N + 1);
    TH_EQ_INT(rec.out_of_order, 0);
    for (int i = 0; i < rec.n && i < N; i++) {
        answer_t *a = &rec.answers[i];
        TH_EQ_INT(a->idx, i);
        TH_EQ_INT(a->ok, i != 50);
        if (i == 50) {
            CU_ASSERT(strstr(a->err, "division by zero") != NULL);
        } else {
            TH_EQ_INT(atoi(a->value), i);
        }
    }
    TH_EQ_STR(rec.answers[N].value, "chained");
    pg_close(&loop, pg);
    free(rec.answers);
}

typedef struct pid_box {
    int pid;
    int done;
} pid_box_t;

static void pid_cb(const PGresult *res, const char *err, void *arg)
{
    pid_box_t *b = arg;
    b->pid = res ? atoi(PQgetvalue(res, 0, 0)) : -1;
    b->done = 1;
}

static int box_done(void *arg)
{
    return ((pid_box_t *)arg)->done;
}

static int backend_pid(uv_loop_t *loop, gt_pg_t *pg)
{
    pid_box_t b = {0, 0};
    if (gt_pg_query(pg, "SELECT pg_backend_pid()", 0, NULL, pid_cb, &b) != 0)
        return -1;
    if (!th_loop_until(loop, box_done, &b, 20000))
        return -1;
    return b.pid;
}

static void test_reconnect_resends_pending(void)
{
    char ci[512], sql[128];
    PGconn *c;
    uv_loop_t loop;
    gt_pg_t *pg = fresh_db(&loop, ci, sizeof(ci), &c, "CREATE TABLE r (i int PRIMARY KEY)");
    int pid = backend_pid(&loop, pg);
    CU_ASSERT_FATAL(pid > 0);

    enum { N = 200 };
    rec_t rec = {calloc(N, sizeof(answer_t)), 0, N, 0};
    qarg_t args[N];
    /* The first query holds the backend busy so the rest are surely
     * unanswered when it is killed. */
    args[0] = (qarg_t){&rec, 0};
    TH_EQ_INT(gt_pg_query(pg, "SELECT pg_sleep(0.5), 0", 0, NULL, rec_cb, &args[0]), 0);
    for (int i = 1; i < N; i++) {
        char num[16];
        snprintf(num, sizeof(num), "%d", i);
        const char *p[1] = {num};
        args[i] = (qarg_t){&rec, i};
        TH_EQ_INT(gt_pg_query(pg,
                              "INSERT INTO r VALUES ($1) ON CONFLICT (i) DO UPDATE SET i = "
                              "EXCLUDED.i RETURNING i",
                              1, p, rec_cb, &args[i]),
                  0);
    }
    snprintf(sql, sizeof(sql), "SELECT pg_terminate_backend(%d)::int", pid);
    TH_EQ_INT(scalar(c, sql), 1);
    TH_EQ_INT(rec.n, 0);

    CU_ASSERT(th_loop_until(&loop, no_pending, pg, 30000));
    TH_EQ_INT(rec.n, N);
    TH_EQ_INT(rec.out_of_order, 0);
    int bad = 0;
    for (int i = 0; i < rec.n; i++)
        if (!rec.answers[i].ok || atoi(rec.answers[i].value) != rec.answers[i].idx)
            bad++;
    TH_EQ_INT(bad, 0);
    TH_EQ_INT(scalar(c, "SELECT count(*) FROM r"), N - 1);
    int pid2 = backend_pid(&loop, pg);
    CU_ASSERT(pid2 > 0 && pid2 != pid);
    pg_close(&loop, pg);
    free(rec.answers);
    PQfinish(c);
}

static void closed_cb(const PGresult *res, const char *err, void *arg)
{
    answer_t *a = arg;
    a->ok = res != NULL;
    snprintf(a->err, sizeof(a->err), "%s", err ? err : "");
    a->idx++;
}

/* With no server, queries wait (reconnecting with backoff) until freed. */
static void test_free_fails_waiting_queries(void)
{
    char ci[128];
    snprintf(ci, sizeof(ci), "host=127.0.0.1 port=%d user=gantry dbname=x connect_timeout=2",
             th_free_port());
    uv_loop_t loop;
    uv_loop_init(&loop);
    gt_pg_t *pg = gt_pg_new(&loop, ci);
    CU_ASSERT_FATAL(pg != NULL);
    answer_t a = {0, 0, "", ""};
    TH_EQ_INT(gt_pg_query(pg, "SELECT 1", 0, NULL, closed_cb, &a), 0);
    uv_run(&loop, UV_RUN_NOWAIT);
    TH_EQ_INT(gt_pg_connected(pg), 0);
    TH_EQ_INT(gt_pg_pending(pg), 1);
    gt_pg_free(pg);
    TH_EQ_INT(a.idx, 1);
    TH_EQ_INT(a.ok, 0);
    TH_EQ_STR(a.err, "closed");
    uv_run(&loop, UV_RUN_DEFAULT);
    TH_EQ_INT(uv_loop_close(&loop), 0);
}

/* ---- transient against permanent ----------------------------------------- */

static double retries(const char *cls)
{
    return gt_metric_value(gt_metrics_counter("gantry_pg_retries_total", "", "class"), cls);
}

typedef struct retry_wait {
    const char *cls;
    double above;
} retry_wait_t;

static int retried(void *arg)
{
    retry_wait_t *w = arg;
    return retries(w->cls) > w->above;
}

static int answered(void *arg)
{
    return ((answer_t *)arg)->idx > 0;
}

/* A role of its own in a new database: the faults are injected on it with
 * ALTER ROLE (picked up by each new session) and GRANT/REVOKE. Returns the
 * admin connection to that database; ci is the role's conninfo. */
static PGconn *fault_db(char *ci, size_t len, char *role, size_t rlen)
{
    char admin[512], err[512], sql[512];
    if (th_pg_create_db(admin, sizeof(admin)) != 0)
        return NULL;
    PGconn *c = gt_pg_connect_sync(admin, err, sizeof(err));
    if (!c)
        return NULL;
    snprintf(role, rlen, "r_%d_%lld", (int)getpid(), (long long)th_now_ms());
    snprintf(sql, sizeof(sql),
             "CREATE ROLE %s LOGIN; CREATE TABLE t (i int PRIMARY KEY);"
             " GRANT SELECT, INSERT ON t TO %s",
             role, role);
    PQclear(PQexec(c, sql));
    const char *u = strstr(admin, "user=gantry");
    snprintf(ci, len, "%.*suser=%s%s", (int)(u - admin), admin, role, u + strlen("user=gantry"));
    return c;
}

static void exec_admin(PGconn *c, const char *fmt, const char *role)
{
    char sql[512];
    snprintf(sql, sizeof(sql), fmt, role);
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        fprintf(stderr, "  %s: %s", sql, PQresultErrorMessage(r));
    PQclear(r);
}

/* While set_fmt (ALTER ROLE ... for the role %s) holds, insert fails with
 * the transient sqlstate: it is held and re-sent, never answered with the
 * error, until reset_fmt lifts the cause; then it is answered once. */
static void check_transient(const char *set_fmt, const char *reset_fmt, const char *sqlstate,
                            const char *insert)
{
    char ci[600], role[64];
    PGconn *c = fault_db(ci, sizeof(ci), role, sizeof(role));
    CU_ASSERT_FATAL(c != NULL);
    exec_admin(c, set_fmt, role);
    uv_loop_t loop;
    uv_loop_init(&loop);
    gt_pg_t *pg = gt_pg_new(&loop, ci);
    CU_ASSERT_FATAL(pg != NULL);
    answer_t a = {0, 0, "", ""};
    double before = retries(sqlstate);
    TH_EQ_INT(gt_pg_query(pg, insert, 0, NULL, closed_cb, &a), 0);
    retry_wait_t w = {sqlstate, before + 2};
    CU_ASSERT(th_loop_until(&loop, retried, &w, 20000));
    TH_EQ_INT(a.idx, 0); /* not answered: neither failed nor done */
    TH_EQ_INT(gt_pg_pending(pg), 1);
    TH_EQ_INT(scalar(c, "SELECT count(*) FROM t"), 0);
    exec_admin(c, reset_fmt, role);
    CU_ASSERT(th_loop_until(&loop, answered, &a, 20000));
    TH_EQ_INT(a.idx, 1);
    TH_EQ_INT(a.ok, 1);
    TH_EQ_STR(a.err, "");
    TH_EQ_INT(scalar(c, "SELECT count(*) FROM t"), 1);
    pg_close(&loop, pg);
    PQfinish(c);
}

/* A statement timeout is transient. */
static void test_statement_timeout_is_retried(void)
{
    check_transient("ALTER ROLE %s SET statement_timeout = '20ms'",
                    "ALTER ROLE %s RESET statement_timeout", "57",
                    "INSERT INTO t SELECT 1 FROM pg_sleep(0.2) ON CONFLICT DO NOTHING");
}

/* A read-only session (a failover's old primary) is transient: the insert
 * waits on new connections until the role may write again. */
static void test_read_only_is_retried(void)
{
    check_transient("ALTER ROLE %s SET default_transaction_read_only = on",
                    "ALTER ROLE %s RESET default_transaction_read_only", "25006",
                    "INSERT INTO t VALUES (1) ON CONFLICT DO NOTHING");
}

/* A revoked privilege is permanent: answered at once with its SQLSTATE, not
 * retried; the queries around it are unaffected. */
static void test_permission_denied_is_permanent(void)
{
    char ci[600], role[64], state[6];
    PGconn *c = fault_db(ci, sizeof(ci), role, sizeof(role));
    CU_ASSERT_FATAL(c != NULL);
    exec_admin(c, "REVOKE INSERT ON t FROM %s", role);
    uv_loop_t loop;
    uv_loop_init(&loop);
    gt_pg_t *pg = gt_pg_new(&loop, ci);
    CU_ASSERT_FATAL(pg != NULL);
    CU_ASSERT(th_loop_until(&loop, is_connected, pg, 10000));
    double before = retries("42") + retries("08");
    rec_t rec = {calloc(3, sizeof(answer_t)), 0, 3, 0};
    qarg_t args[3] = {{&rec, 0}, {&rec, 1}, {&rec, 2}};
    TH_EQ_INT(gt_pg_query(pg, "SELECT 0", 0, NULL, rec_cb, &args[0]), 0);
    TH_EQ_INT(gt_pg_query(pg, "INSERT INTO t VALUES (1)", 0, NULL, rec_cb, &args[1]), 0);
    TH_EQ_INT(gt_pg_query(pg, "SELECT 2", 0, NULL, rec_cb, &args[2]), 0);
    CU_ASSERT(th_loop_until(&loop, no_pending, pg, 10000));
    TH_EQ_INT(rec.n, 3);
    TH_EQ_INT(rec.out_of_order, 0);
    TH_EQ_INT(rec.answers[0].ok, 1);
    TH_EQ_INT(rec.answers[1].ok, 0);
    TH_EQ_INT(rec.answers[2].ok, 1);
    TH_EQ_INT(gt_pg_err_sqlstate(rec.answers[1].err, state), 0);
    TH_EQ_STR(state, "42501");
    CU_ASSERT(strstr(rec.answers[1].err, "permission denied") != NULL);
    CU_ASSERT(retries("42") + retries("08") == before);
    TH_EQ_INT(scalar(c, "SELECT count(*) FROM t"), 0);
    pg_close(&loop, pg);
    free(rec.answers);
    PQfinish(c);
}

/* A host name is resolved off the loop and connected to by address. */
static void test_host_name_resolved(void)
{
    char ci[512], real[512];
    CU_ASSERT_FATAL(th_pg_create_db(real, sizeof(real)) == 0);
    const char *db = strstr(real, "dbname=");
    snprintf(ci, sizeof(ci), "host=localhost port=%s user=gantry %s connect_timeout=5",
             getenv("GANTRY_TEST_PGPORT"), db);
    uv_loop_t loop;
    uv_loop_init(&loop);
    gt_pg_t *pg = gt_pg_new(&loop, ci);
    CU_ASSERT_FATAL(pg != NULL);
    answer_t a = {0, 0, "", ""};
    TH_EQ_INT(gt_pg_query(pg, "SELECT 1", 0, NULL, closed_cb, &a), 0);
    CU_ASSERT(th_loop_until(&loop, answered, &a, 20000));
    TH_EQ_INT(a.ok, 1);
    CU_ASSERT(gt_pg_connected(pg));
    pg_close(&loop, pg);

    /* A name that does not resolve: a failed connect, retried; the query waits. */
    uv_loop_init(&loop);
    pg = gt_pg_new(&loop, "host=gantry-no-such-host.invalid port=5432 user=gantry dbname=x");
    CU_ASSERT_FATAL(pg != NULL);
    a = (answer_t){0, 0, "", ""};
    TH_EQ_INT(gt_pg_query(pg, "SELECT 1", 0, NULL, closed_cb, &a), 0);
    CU_ASSERT(!th_loop_until(&loop, answered, &a, 1500));
    TH_EQ_INT(gt_pg_connected(pg), 0);
    TH_EQ_INT(gt_pg_pending(pg), 1);
    gt_pg_free(pg);
    TH_EQ_INT(a.idx, 1);
    TH_EQ_STR(a.err, "closed");
    uv_run(&loop, UV_RUN_DEFAULT);
    TH_EQ_INT(uv_loop_close(&loop), 0);
}

static void test_sqlstate_classes(void)
{
    static const char *transient[] = {"08006", "08001", "40001", "40P01", "53100",
                                      "53200", "57014", "57P01", "25006"};
    static const char *permanent[] = {"23505", "42501", "42P01", "22P02",
                                      "25001", "XX000", "0800",  ""};
    for (size_t i = 0; i < sizeof(transient) / sizeof(*transient); i++)
        TH_EQ_INT(gt_pg_sqlstate_transient(transient[i]), 1);
    for (size_t i = 0; i < sizeof(permanent) / sizeof(*permanent); i++)
        TH_EQ_INT(gt_pg_sqlstate_transient(permanent[i]), 0);
    TH_EQ_INT(gt_pg_sqlstate_transient(NULL), 0);
    char st[6];
    TH_EQ_INT(gt_pg_err_sqlstate("23505: duplicate key value", st), 0);
    TH_EQ_STR(st, "23505");
    TH_EQ_INT(gt_pg_err_sqlstate("closed", st), -1);
    TH_EQ_STR(st, "");
    TH_EQ_INT(gt_pg_err_sqlstate("cannot send query", st), -1);
    TH_EQ_INT(gt_pg_err_sqlstate(NULL, st), -1);
}

int main(void)
{
    static const th_test_t tests[] = {
        {"migrate applies all, then none", test_migrate_twice},
        {"failed migration rolls back only itself", test_migrate_failure_rolls_back},
        {"concurrent migrate runs apply each file once", test_migrate_concurrent},
        {"10000 pipelined inserts answered in order", test_pipelined_inserts_in_order},
        {"an SQL error fails only its query", test_error_fails_only_that_query},
        {"binary parameters beside text ones", test_binary_parameters},
        {"killed backend: pending queries resent", test_reconnect_resends_pending},
        {"free fails waiting queries", test_free_fails_waiting_queries},
        {"SQLSTATE classes: transient or permanent", test_sqlstate_classes},
        {"host name resolved off the loop, connected by address", test_host_name_resolved},
        {"statement timeout: retried until lifted, answered once",
         test_statement_timeout_is_retried},
        {"read-only session: retried until writable, answered once", test_read_only_is_retried},
        {"revoked privilege: permanent, with its SQLSTATE", test_permission_denied_is_permanent},
        {NULL, NULL},
    };
    return th_run("pg", tests);
}
