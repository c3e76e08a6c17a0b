/* test_fault_release.c - the releaser of a lane with slots (docs/scheduling.md)
 * under faults: dispatchers SIGKILLed while they release a batch in waves
 * (two dispatchers, restarted under the same --id), and PostgreSQL stopped
 * mid-release. Every task runs exactly once, every job completes, nothing is
 * left waiting. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fault.h"

#define BATCH 1500
#define SINGLES 200
#define SLOTS 16

static th_cluster_t cl;

static const char *const extra =
    "{\"dispatcher\": {\"max_batch\": 5000},"
    " \"scheduling\": {\"lanes\": {\"small\": {\"slots\": 16}}, \"release_stale_ms\": 3000}}";

/* The batch (tenant-a) and SINGLES single requests (tenant-b), all on lane
 * small, as one JSONL file; their request_ids. */
static json_t *write_requests(char *path, size_t len)
{
    json_t *ids = json_array(), *batch = json_array();
    for (int i = 0; i < BATCH; i++) {
        char in[32];
        snprintf(in, sizeof(in), "item %d", i);
        json_array_append_new(batch, json_string(in));
    }
    size_t cap = 64 * 1024 + (size_t)BATCH * 32 + (size_t)SINGLES * 256, n = 0;
    char *buf = calloc(1, cap);
    json_t *req = json_pack("{s:s, s:s, s:s, s:s, s:o}", "request_id", "rel-batch", "tenant_id",
                            "tenant-a", "kind", "generate", "model", "small", "batch", batch);
    char *text = json_dumps(req, JSON_COMPACT);
    n += (size_t)snprintf(buf + n, cap - n, "%s\n", text);
    free(text);
    json_decref(req);
    json_array_append_new(ids, json_string("rel-batch"));
    for (int i = 0; i < SINGLES; i++) {
        char rid[32];
        snprintf(rid, sizeof(rid), "rel-b-%03d", i);
        req =
            json_pack("{s:s, s:s, s:s, s:s, s:s, s:i}", "request_id", rid, "tenant_id", "tenant-b",
                      "kind", "generate", "model", "small", "input", "hello", "priority", i % 10);
        text = json_dumps(req, JSON_COMPACT);
        n += (size_t)snprintf(buf + n, cap - n, "%s\n", text);
        free(text);
        json_decref(req);
        json_array_append_new(ids, json_string(rid));
    }
    const char *p = th_tmpfile(".jsonl", buf);
    free(buf);
    snprintf(path, len, "%s", p ? p : "");
    return p ? ids : (json_decref(ids), NULL);
}

static int released(void *arg)
{
    return th_sql_long(cl.conninfo, "SELECT count(*) FROM tasks WHERE status = 'succeeded'") >=
           *(long *)arg;
}

/* Exactly once: every task ran (one allocation each at fail rate 0, one
 * usage event each), the batch has every output, nothing waits any more. */
static void check_once(void)
{
    long tasks = BATCH + SINGLES;
    TH_EQ_INT(th_sql_long(cl.conninfo, "SELECT count(*) FROM tasks WHERE kind = 'inference'"
                                       " AND status = 'succeeded'"),
              tasks);
    TH_EQ_INT(th_sql_long(cl.conninfo, "SELECT count(*) FROM tasks WHERE hold IS NOT NULL"
                                       " AND status = 'pending'"),
              0);
    TH_EQ_INT(th_sql_long(cl.conninfo, "SELECT count(*) FROM jobs WHERE status <> 'succeeded'"), 0);
    TH_EQ_INT(th_mock_stat(&cl, "allocations_total"), tasks);
    json_t *results = th_fault_results(&cl);
    json_t *res = json_array_get(json_object_get(results, "rel-batch"), 0);
    TH_EQ_STR(json_string_value(json_object_get(res, "status")), "succeeded");
    TH_EQ_INT(json_array_size(json_object_get(res, "outputs")), BATCH);
    json_decref(results);
}

static void test_dispatcher_kills(void)
{
    char path[512];
    th_proc_t d2;
    th_cluster_opts_t o = {
        .latency = "20-40", .workers = 2, .worker_in_flight = 8, .extra_config = extra};
    CU_ASSERT_EQUAL_FATAL(th_cluster_start(&cl, &o), 0);
    CU_ASSERT_EQUAL_FATAL(th_cluster_start_dispatcher(&cl, &d2, "dispatcher-e2e-2"), 0);
    json_t *ids = write_requests(path, sizeof(path));
    CU_ASSERT_PTR_NOT_NULL_FATAL(ids);
    CU_ASSERT_EQUAL_FATAL(th_fault_submit(&cl, path), 0);
    /* Killed in turn while the waves go out, each restarted 300 ms later. */
    for (int k = 0; k < 6; k++) {
        long at = 100 + k * 200L;
        CU_ASSERT_FATAL(th_poll(released, &at, 120000));
        th_proc_t *p = k % 2 ? &d2 : &cl.dispatcher;
        kill(p->pid, SIGKILL);
        th_proc_stop(p, SIGKILL, 5000);
        long inflight =
            th_sql_long(cl.conninfo, "SELECT count(*) FROM tasks WHERE lane = 'small' AND"
                                     " (status IN ('queued', 'running') OR hold = 'releasing')");
        CU_ASSERT(inflight <= SLOTS);
        th_fault_hold(300);
        TH_EQ_INT(
            th_cluster_start_dispatcher(&cl, p, k % 2 ? "dispatcher-e2e-2" : "dispatcher-e2e"), 0);
    }
    th_fault_expect_t e = {.request_ids = ids, .max_usage_events = 1, .timeout_ms = 180000};
    TH_EQ_INT(th_fault_check(&cl, &e), 0);
    check_once();
    fprintf(stderr,
            "  re-published releases: %ld (dispatcher), %ld (dispatcher-2); copies skipped"
            " by the start gate: see worker logs\n",
            th_log_count(&cl, "dispatcher.log", "publishing again"),
            th_log_count(&cl, "dispatcher-e2e-2.log", "publishing again"));
    json_decref(ids);
    th_proc_stop(&d2, SIGTERM, 30000);
    th_cluster_stop(&cl);
}

static void test_pg_down(void)
{
    char pgdir[128], path[512];
    CU_ASSERT_EQUAL_FATAL(th_fault_pg_private(pgdir, sizeof(pgdir)), 0);
    th_cluster_opts_t o = {
        .latency = "20-40", .workers = 2, .worker_in_flight = 8, .extra_config = extra};
    CU_ASSERT_EQUAL_FATAL(th_cluster_start(&cl, &o), 0);
    json_t *ids = write_requests(path, sizeof(path));
    CU_ASSERT_PTR_NOT_NULL_FATAL(ids);
    CU_ASSERT_EQUAL_FATAL(th_fault_submit(&cl, path), 0);
    long at = 300;
    CU_ASSERT_FATAL(th_poll(released, &at, 120000));
    CU_ASSERT_EQUAL_FATAL(th_fault_pg_ctl(pgdir, "stop"), 0);
    th_fault_hold(10000);
    CU_ASSERT_EQUAL_FATAL(th_fault_pg_ctl(pgdir, "start"), 0);
    TH_EQ_INT(cl.dispatcher.exited, 0);
    th_fault_expect_t e = {.request_ids = ids, .max_usage_events = 1, .timeout_ms = 180000};
    TH_EQ_INT(th_fault_check(&cl, &e), 0);
    check_once();
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
        {"releasing waves: dispatchers SIGKILLed", test_dispatcher_kills},
        {"releasing waves: PostgreSQL stopped for 10 s", test_pg_down},
        {NULL, NULL}};
    return th_run("fault release", tests);
}
