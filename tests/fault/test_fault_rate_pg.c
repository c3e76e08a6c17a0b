/* test_fault_rate_pg.c - PostgreSQL (a private server) stopped for 10 s
 * while a rate limited tenant's requests wait for their bucket: they wait,
 * then are served, each once; and no one-second window ever admitted more
 * than the burst plus the rate (nothing went through unchecked, not while
 * the database was down nor in a rush after it came back). */
#include <stdlib.h>
#include <string.h>

#include "fault.h"

#define REQUESTS 40
#define OUTAGE_MS 10000
#define RPM 120 /* 2 a second */
#define BURST 2

static th_cluster_t cl;

static int waiting(void *arg)
{
    (void)arg;
    return th_sql_long(cl.conninfo, "SELECT count(*) FROM jobs") >= 6 &&
           th_sql_long(cl.conninfo, "SELECT count(*) FROM rate_holds WHERE released_at IS NULL") >=
               20;
}

static void test_pg_down_while_waiting(void)
{
    char pgdir[128];
    CU_ASSERT_EQUAL_FATAL(th_fault_pg_private(pgdir, sizeof(pgdir)), 0);
    th_cluster_opts_t o = {
        .latency = "5-20",
        .workers = 1,
        .worker_in_flight = 16,
        .extra_config = "{\"dispatcher\": {\"backlog_ms\": 500, \"rate_limits\": {\"release_ms\":"
                        " 100, \"tenants\": {\"lim\": {\"requests_per_minute\": 120,"
                        " \"burst_requests\": 2}}}}}"};
    CU_ASSERT_EQUAL_FATAL(th_cluster_start(&cl, &o), 0);
    size_t cap = REQUESTS * 200, off = 0;
    char *text = malloc(cap);
    for (int i = 0; i < REQUESTS; i++)
        off += (size_t)snprintf(text + off, cap - off,
                                "{\"schema\":\"gantry.request.v1\",\"request_id\":\"lim-%02d\","
                                "\"tenant_id\":\"lim\",\"kind\":\"generate\",\"model\":\"small\","
                                "\"input\":\"hello %d\"}\n",
                                i, i);
    const char *path = th_tmpfile(".jsonl", text);
    free(text);
    json_t *ids = th_fault_ids_of(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ids);
    CU_ASSERT_EQUAL_FATAL(th_fault_submit(&cl, path), 0);
    CU_ASSERT_FATAL(th_poll(waiting, NULL, 30000));

    CU_ASSERT_EQUAL_FATAL(th_fault_pg_ctl(pgdir, "stop"), 0);
    fprintf(stderr, "  PostgreSQL stopped with requests held; down for %d s\n", OUTAGE_MS / 1000);
    th_fault_hold(OUTAGE_MS);
    CU_ASSERT_EQUAL_FATAL(th_fault_pg_ctl(pgdir, "start"), 0);
    TH_EQ_INT(cl.dispatcher.exited, 0);

    th_fault_expect_t e = {.request_ids = ids, .max_usage_events = 1, .timeout_ms = 120000};
    TH_EQ_INT(th_fault_check(&cl, &e), 0);
    TH_EQ_INT(th_sql_long(cl.conninfo, "SELECT count(*) FROM jobs WHERE status = 'succeeded'"),
              REQUESTS);
    TH_EQ_INT(th_sql_long(cl.conninfo, "SELECT count(*) FROM rate_holds"), 0);
    /* The most admitted in any one second (job rows' creation). */
    long most = th_sql_long(cl.conninfo,
                            "SELECT max(n) FROM (SELECT count(*) OVER (ORDER BY created_at RANGE"
                            " BETWEEN interval '1 s' PRECEDING AND CURRENT ROW) AS n FROM jobs) x");
    long gap = th_sql_long(cl.conninfo, "SELECT (extract(epoch FROM max(d)) * 1000)::bigint FROM"
                                        " (SELECT created_at - lag(created_at) OVER (ORDER BY"
                                        " created_at) AS d FROM jobs) x");
    fprintf(stderr,
            "  at most %ld admitted in a second (burst %d + %d a second); longest pause "
            "%ld ms (the outage)\n",
            most, BURST, RPM / 60, gap);
    CU_ASSERT(most <= BURST + RPM / 60 + 1);
    CU_ASSERT(gap >= OUTAGE_MS / 2); /* admissions stopped while the database was down */
    json_t *dlq = th_fault_dlq(&cl);
    TH_EQ_INT(json_array_size(dlq), 0);
    json_decref(dlq);
    json_decref(ids);
    th_cluster_stop(&cl);
    th_fault_pg_ctl(pgdir, "stop");
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", pgdir);
    CU_ASSERT(system(cmd) == 0);
}

int main(void)
{
    static const th_test_t tests[] = {
        {"PostgreSQL down while requests wait on their rate limit", test_pg_down_while_waiting},
        {NULL, NULL}};
    return th_run("fault rate pg", tests);
}
