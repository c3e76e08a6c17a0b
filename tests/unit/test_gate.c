/* test_gate.c - the worker's start gate on a real PostgreSQL: the claims of one
 * loop turn share a statement, and each still gets the verdict it would get
 * alone (start, skip for a second copy, cancelled, expired, a task not in the
 * table), and claims pending when the gate is freed answer CLOSED. */
#include <libpq-fe.h>
#include <stdlib.h>
#include <string.h>

#include "gate.h"
#include "harness.h"
#include "pg.h"

typedef struct {
    int answered;
    gt_gate_verdict_t v;
} answer_t;

static void on_verdict(gt_gate_verdict_t v, void *arg)
{
    answer_t *a = arg;
    a->answered++;
    a->v = v;
}

typedef struct {
    uv_loop_t *loop;
    answer_t *answers;
    int n;
} wait_t;

static int turn_until_answered(void *arg)
{
    wait_t *w = arg;
    uv_run(w->loop, UV_RUN_NOWAIT);
    for (int i = 0; i < w->n; i++)
        if (w->answers[i].answered == 0)
            return 0;
    return 1;
}

static void exec_ok(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        fprintf(stderr, "  %s: %s", sql, PQerrorMessage(c));
    CU_ASSERT_FATAL(PQresultStatus(r) == PGRES_COMMAND_OK);
    PQclear(r);
}

static char *task_field(PGconn *c, const char *task_id, const char *col)
{
    char sql[256];
    snprintf(sql, sizeof(sql), "SELECT %s FROM tasks WHERE task_id = '%s'", col, task_id);
    PGresult *r = PQexec(c, sql);
    char *v = PQntuples(r) == 1 ? strdup(PQgetvalue(r, 0, 0)) : NULL;
    PQclear(r);
    return v;
}

static void test_one_statement_many_verdicts(void)
{
    char ci[512], err[512], cfgtext[1024];
    CU_ASSERT_FATAL(th_pg_create_db(ci, sizeof(ci)) == 0);
    PGconn *c = gt_pg_connect_sync(ci, err, sizeof(err));
    CU_ASSERT_FATAL(c != NULL);
    CU_ASSERT_FATAL(gt_pg_migrate(c, th_src("migrations"), err, sizeof(err)) >= 1);
    /* j-ok: two pending tasks; j-old: created an hour ago; j-cancelled: its
     * job cancelled, the task row not marked. */
    exec_ok(c, "INSERT INTO jobs (request_id, tenant_id, kind, model, lane, task_count, request,"
               " created_at) VALUES"
               " ('j-ok', 'acme', 'chat', 'm', 'small', 2, '{}', now()),"
               " ('j-old', 'acme', 'chat', 'm', 'small', 1, '{}', now() - interval '1 hour'),"
               " ('j-cancelled', 'acme', 'chat', 'm', 'small', 1, '{}', now())");
    exec_ok(c, "UPDATE jobs SET cancelled_at = now() WHERE request_id = 'j-cancelled'");
    exec_ok(c, "INSERT INTO tasks (task_id, request_id, idx, kind, status, model, lane) VALUES"
               " ('j-ok/0', 'j-ok', 0, 'inference', 'queued', 'm', 'small'),"
               " ('j-ok/1', 'j-ok', 1, 'inference', 'pending', 'm', 'small'),"
               " ('j-old/0', 'j-old', 0, 'inference', 'queued', 'm', 'small'),"
               " ('j-cancelled/0', 'j-cancelled', 0, 'inference', 'queued', 'm', 'small')");

    snprintf(cfgtext, sizeof(cfgtext),
             "{\"kafka\": {\"bootstrap_servers\": \"127.0.0.1:1\"}, \"postgres\": {\"conninfo\":"
             " \"%s\"}}",
             ci);
    gt_config_t *cfg = gt_config_parse(cfgtext, ".", err, sizeof(err));
    CU_ASSERT_FATAL(cfg != NULL);
    uv_loop_t loop;
    uv_loop_init(&loop);
    gt_gate_t *g = gt_gate_new(&loop, cfg);
    CU_ASSERT_FATAL(g != NULL);

    /* A first claim takes the statement; the rest arrive while it is out and
     * go together in the next one, as a loop turn's tasks do. */
    answer_t a[8];
    memset(a, 0, sizeof(a));
    TH_EQ_INT(gt_gate_claim(g, "j-ok/1", "j-ok", 0, "0:1", on_verdict, &a[0]), 0);
    TH_EQ_INT(gt_gate_claim(g, "j-ok/0", "j-ok", 0, "0:10", on_verdict, &a[1]), 0);
    /* a second copy of j-ok/0 (another message), in the same statement */
    TH_EQ_INT(gt_gate_claim(g, "j-ok/0", "j-ok", 0, "0:11", on_verdict, &a[2]), 0);
    TH_EQ_INT(gt_gate_claim(g, "j-old/0", "j-old", 60000, "0:12", on_verdict, &a[3]), 0);
    TH_EQ_INT(gt_gate_claim(g, "j-cancelled/0", "j-cancelled", 0, "0:13", on_verdict, &a[4]), 0);
    TH_EQ_INT(gt_gate_claim(g, "by-hand/0", "by-hand", 0, NULL, on_verdict, &a[5]), 0);
    /* j-ok/1 twice more (its first claim went alone, under 0:1): the same
     * message again (a redelivery) starts again; another message is a copy. */
    TH_EQ_INT(gt_gate_claim(g, "j-ok/1", "j-ok", 0, "0:1", on_verdict, &a[6]), 0);
    TH_EQ_INT(gt_gate_claim(g, "j-ok/1", "j-ok", 0, "0:2", on_verdict, &a[7]), 0);
    for (int i = 0; i < 8; i++)
        TH_EQ_INT(a[i].answered, 0); /* never inside the call */
    wait_t w = {&loop, a, 8};
    CU_ASSERT_FATAL(th_poll(turn_until_answered, &w, 20000));

    for (int i = 0; i < 8; i++)
        TH_EQ_INT(a[i].answered, 1);
    TH_EQ_INT(a[0].v, GT_GATE_START);
    /* the first copy of j-ok/0 starts, the second (decided alone after) is skipped */
    TH_EQ_INT(a[1].v, GT_GATE_START);
    TH_EQ_INT(a[2].v, GT_GATE_SKIP);
    TH_EQ_INT(a[3].v, GT_GATE_EXPIRED);
    TH_EQ_INT(a[4].v, GT_GATE_CANCELLED);
    TH_EQ_INT(a[5].v, GT_GATE_START);
    /* the same message again (a redelivery) starts again; another is a copy */
    TH_EQ_INT(a[6].v, GT_GATE_START);
    TH_EQ_INT(a[7].v, GT_GATE_SKIP);

    char *st = task_field(c, "j-ok/0", "status");
    char *msg = task_field(c, "j-ok/0", "started_msg");
    TH_EQ_STR(st, "running");
    TH_EQ_STR(msg, "0:10");
    free(st);
    free(msg);
    msg = task_field(c, "j-ok/1", "started_msg");
    TH_EQ_STR(msg, "0:1");
    free(msg);
    st = task_field(c, "j-old/0", "status");
    TH_EQ_STR(st, "queued"); /* expired: not marked running, the worker reports it */
    free(st);
    st = task_field(c, "j-cancelled/0", "status");
    TH_EQ_STR(st, "queued");
    free(st);

    /* Claims pending when the gate is freed answer CLOSED. */
    answer_t b[3];
    memset(b, 0, sizeof(b));
    TH_EQ_INT(gt_gate_claim(g, "j-ok/1", "j-ok", 0, "0:3", on_verdict, &b[0]), 0);
    TH_EQ_INT(gt_gate_claim(g, "j-ok/1", "j-ok", 0, "0:4", on_verdict, &b[1]), 0);
    gt_gate_free(g);
    TH_EQ_INT(b[0].answered, 1);
    TH_EQ_INT(b[1].answered, 1);
    TH_EQ_INT(b[0].v, GT_GATE_CLOSED);
    TH_EQ_INT(b[1].v, GT_GATE_CLOSED);

    while (uv_run(&loop, UV_RUN_DEFAULT) != 0)
        ;
    TH_EQ_INT(uv_loop_close(&loop), 0);
    gt_config_free(cfg);
    PQfinish(c);
}

int main(void)
{
    static const th_test_t tests[] = {
        {"one statement, each claim its own verdict", test_one_statement_many_verdicts},
        {NULL, NULL},
    };
    return th_run("gate", tests);
}
