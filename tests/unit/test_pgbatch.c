/* test_pgbatch.c - one statement for many waiting rows, on a real PostgreSQL:
 * items added while a statement is out share the next one; a bad item fails
 * only itself (its statement's items go again alone); an item the statement
 * leaves unanswered goes again alone, after it; nothing is tried again once
 * the connection is closed. */
#include <libpq-fe.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "pg.h"
#include "pgbatch.h"

typedef struct {
    int answered;
    char err[256];
    long long txid; /* the transaction that answered it (rows batches) */
} item_t;

typedef struct {
    uv_loop_t *loop;
    item_t *items;
    int n;
} wait_t;

static void on_done(void *arg, const char *err)
{
    item_t *it = arg;
    it->answered++;
    snprintf(it->err, sizeof(it->err), "%s", err ? err : "");
}

static void on_row(void *arg, const PGresult *res, int row, const char *err)
{
    item_t *it = arg;
    it->answered++;
    snprintf(it->err, sizeof(it->err), "%s", err ? err : row < 0 ? "no row" : "");
    it->txid = row >= 0 ? atoll(PQgetvalue(res, row, 1)) : -1;
}

static int turn_until_answered(void *arg)
{
    wait_t *w = arg;
    uv_run(w->loop, UV_RUN_NOWAIT);
    for (int i = 0; i < w->n; i++)
        if (!w->items[i].answered)
            return 0;
    return 1;
}

static long count_of(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    long n = PQresultStatus(r) == PGRES_TUPLES_OK ? atol(PQgetvalue(r, 0, 0)) : -1;
    PQclear(r);
    return n;
}

typedef struct {
    char ci[512];
    PGconn *c;
    uv_loop_t loop;
    gt_pg_t *pg;
} env_t;

static void env_up(env_t *e)
{
    char err[512];
    CU_ASSERT_FATAL(th_pg_create_db(e->ci, sizeof(e->ci)) == 0);
    e->c = gt_pg_connect_sync(e->ci, err, sizeof(err));
    CU_ASSERT_FATAL(e->c != NULL);
    PGresult *r = PQexec(e->c, "CREATE TABLE kv (k text PRIMARY KEY, v int CHECK (v >= 0))");
    CU_ASSERT_FATAL(PQresultStatus(r) == PGRES_COMMAND_OK);
    PQclear(r);
    uv_loop_init(&e->loop);
    e->pg = gt_pg_new(&e->loop, e->ci);
    CU_ASSERT_FATAL(e->pg != NULL);
}

static void env_down(env_t *e)
{
    gt_pg_free(e->pg);
    while (uv_run(&e->loop, UV_RUN_DEFAULT) != 0)
        ;
    TH_EQ_INT(uv_loop_close(&e->loop), 0);
    PQfinish(e->c);
}

static const char sql_put[] = "INSERT INTO kv SELECT k, v FROM json_to_recordset($1::json)"
                              " AS u(k text, v int)";

/* Adds n items to b, one row each: key prefix<i>, value i, or -1 (which the
 * CHECK refuses) for item bad. */
static void add_puts(gt_pgbatch_t *b, item_t *it, int n, const char *prefix, int bad)
{
    for (int i = 0; i < n; i++) {
        char k[16];
        snprintf(k, sizeof(k), "%s%d", prefix, i);
        TH_EQ_INT(
            gt_pgbatch_add(b, &it[i], json_pack("[{s:s, s:i}]", "k", k, "v", i == bad ? -1 : i)),
            0);
    }
}

/* Five items wait behind a first: they share one statement; one of them
 * breaks a CHECK, so that statement fails, and each of its five goes again
 * alone: four commit, the bad one gets the server's error. */
static void test_bad_item_fails_only_itself(void)
{
    env_t e;
    env_up(&e);
    gt_pgbatch_t *b = gt_pgbatch_new(&e.pg, sql_put, on_done);
    CU_ASSERT_FATAL(b != NULL);
    item_t it[6];
    memset(it, 0, sizeof(it));
    add_puts(b, it, 6, "k", 3);
    TH_EQ_INT(it[0].answered, 0); /* never inside the call */
    wait_t w = {&e.loop, it, 6};
    CU_ASSERT_FATAL(th_poll(turn_until_answered, &w, 20000));
    for (int i = 0; i < 6; i++) {
        TH_EQ_INT(it[i].answered, 1);
        if (i == 3) {
            CU_ASSERT(strstr(it[i].err, "23514") || strstr(it[i].err, "check"));
        } else {
            TH_EQ_STR(it[i].err, "");
        }
    }
    TH_EQ_INT(count_of(e.c, "SELECT count(*) FROM kv"), 5);
    TH_EQ_INT(count_of(e.c, "SELECT count(*) FROM kv WHERE k = 'k3'"), 0);
    gt_pgbatch_free(b);
    env_down(&e);
}

/* A statement with a row per item that answers only the first item of each
 * key: the others get no row and go again alone, each in a later
 * transaction, where they are first. */
static void test_unanswered_item_goes_alone(void)
{
    env_t e;
    env_up(&e);
    /* Rows ordered by i, as pgbatch reads them. */
    static const char sql[] = "SELECT * FROM (SELECT DISTINCT ON (k) i, txid_current()"
                              " FROM json_to_recordset($1::json) AS u(i int, k text)"
                              " ORDER BY k, i) x ORDER BY i";
    gt_pgbatch_t *b = gt_pgbatch_new_rows(&e.pg, sql, on_row);
    CU_ASSERT_FATAL(b != NULL);
    static const char *keys[] = {"a", "b", "a", "c", "b", "a"};
    item_t it[6];
    memset(it, 0, sizeof(it));
    for (int i = 0; i < 6; i++)
        TH_EQ_INT(gt_pgbatch_add(b, &it[i], json_pack("[{s:s}]", "k", keys[i])), 0);
    wait_t w = {&e.loop, it, 6};
    CU_ASSERT_FATAL(th_poll(turn_until_answered, &w, 20000));
    for (int i = 0; i < 6; i++) {
        TH_EQ_INT(it[i].answered, 1);
        TH_EQ_STR(it[i].err, "");
        CU_ASSERT(it[i].txid > 0);
    }
    /* it[0] went alone; it[1..5] together: b, a, c answered there (the first
     * of their key in it), the second b and a after it, each alone. */
    CU_ASSERT(it[1].txid > it[0].txid);
    TH_EQ_INT(it[2].txid, it[1].txid);
    TH_EQ_INT(it[3].txid, it[1].txid);
    CU_ASSERT(it[4].txid > it[1].txid);
    CU_ASSERT(it[5].txid > it[1].txid);
    CU_ASSERT(it[4].txid != it[5].txid);
    gt_pgbatch_free(b);
    env_down(&e);
}

/* The connection freed with items waiting: the one in flight answers
 * "closed", the waiting ones cannot be sent; none is tried again, none is
 * left unanswered. */
static void test_closed_is_not_retried(void)
{
    env_t e;
    env_up(&e);
    gt_pgbatch_t *b = gt_pgbatch_new(&e.pg, sql_put, on_done);
    CU_ASSERT_FATAL(b != NULL);
    item_t it[4];
    memset(it, 0, sizeof(it));
    add_puts(b, it, 4, "c", -1);
    gt_pg_t *pg = e.pg;
    e.pg = NULL; /* as an owner stopping does: later sends fail */
    gt_pg_free(pg);
    for (int i = 0; i < 4; i++)
        TH_EQ_INT(it[i].answered, 1);
    TH_EQ_STR(it[0].err, "closed");
    for (int i = 1; i < 4; i++)
        TH_EQ_STR(it[i].err, "cannot send query");
    /* Not a JSON array: refused, the item is not taken. */
    TH_EQ_INT(gt_pgbatch_add(b, &it[0], json_object()), -1);
    TH_EQ_INT(gt_pgbatch_add(b, &it[0], NULL), -1);
    TH_EQ_INT(it[0].answered, 1);
    gt_pgbatch_free(b);
    env_down(&e);
}

int main(void)
{
    static const th_test_t tests[] = {
        {"a bad item fails only itself", test_bad_item_fails_only_itself},
        {"an unanswered item goes again alone, after", test_unanswered_item_goes_alone},
        {"nothing is tried again once closed", test_closed_is_not_retried},
        {NULL, NULL},
    };
    return th_run("pgbatch", tests);
}
