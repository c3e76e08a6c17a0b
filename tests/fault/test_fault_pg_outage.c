/* test_fault_pg_outage.c - PostgreSQL (a private server) stopped for 60 s in
 * the middle of a run: results and billing wait for it, nothing goes to the
 * DLQ, and the invariants hold once it is back. */
#include <stdlib.h>
#include <string.h>

#include "fault.h"

#define REQUESTS 1500
#define OUTAGE_MS 60000

static th_cluster_t cl;

static int some_progress(void *arg)
{
    (void)arg;
    return th_sql_long(cl.conninfo, "SELECT count(*) FROM tasks WHERE status = 'succeeded'") >= 100;
}

static void test_pg_outage(void)
{
    char pgdir[128], path[512];
    CU_ASSERT_EQUAL_FATAL(th_fault_pg_private(pgdir, sizeof(pgdir)), 0);
    th_cluster_opts_t o = {.latency = "50-150", .workers = 2, .worker_in_flight = 32};
    CU_ASSERT_EQUAL_FATAL(th_cluster_start(&cl, &o), 0);
    json_t *ids = th_fault_requests(&cl, "requests.jsonl", REQUESTS, 31, path, sizeof(path));
    CU_ASSERT_PTR_NOT_NULL_FATAL(ids);
    CU_ASSERT_EQUAL_FATAL(th_fault_submit(&cl, path), 0);
    CU_ASSERT_FATAL(th_poll(some_progress, NULL, 60000));

    int64_t t0 = th_now_ms();
    CU_ASSERT_EQUAL_FATAL(th_fault_pg_ctl(pgdir, "stop"), 0);
    long during = th_topic_count(cl.bootstrap, "gantry.results");
    fprintf(stderr, "  PostgreSQL stopped with %ld results out; down for %d s\n", during,
            OUTAGE_MS / 1000);
    th_fault_hold(OUTAGE_MS);
    CU_ASSERT_EQUAL_FATAL(th_fault_pg_ctl(pgdir, "start"), 0);
    fprintf(stderr, "  PostgreSQL back after %lld ms\n", (long long)(th_now_ms() - t0));
    /* Every process lived through it. */
    TH_EQ_INT(cl.dispatcher.exited, 0);

    th_fault_expect_t e = {.request_ids = ids, .max_usage_events = 1};
    TH_EQ_INT(th_fault_check(&cl, &e), 0);
    json_t *dlq = th_fault_dlq(&cl);
    if (json_array_size(dlq) > 0) {
        char *first = json_dumps(json_object_get(json_array_get(dlq, 0), "entry"), JSON_COMPACT);
        fprintf(stderr, "  %zu DLQ entries, first: %.300s\n", json_array_size(dlq), first);
        free(first);
    }
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
    static const th_test_t tests[] = {{"PostgreSQL stopped for 60 s mid-run", test_pg_outage},
                                      {NULL, NULL}};
    return th_run("fault pg outage", tests);
}
