/* test_fault_kills.c - 20 SIGKILLs of random workers and dispatchers (among
 * three workers and two dispatchers), each restarted a second later
 * under the same --id, during a 3,000-request run (the 5,000 scaled
 * to what finishes in a few minutes on two shared cores): no request with two
 * results, 0 allocations outstanding after the lease time. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "fault.h"

#define REQUESTS 3000
#define KILLS 20
#define WORKERS 3

static th_cluster_t cl;
static th_proc_t dispatcher2;

static int some_progress(void *arg)
{
    (void)arg;
    return th_sql_long(cl.conninfo, "SELECT count(*) FROM tasks WHERE status = 'succeeded'") >= 100;
}

static void test_kills(void)
{
    char path[512];
    th_cluster_opts_t o = {.latency = "50-150", .workers = WORKERS, .worker_in_flight = 16};
    CU_ASSERT_EQUAL_FATAL(th_cluster_start(&cl, &o), 0);
    CU_ASSERT_EQUAL_FATAL(th_cluster_start_dispatcher(&cl, &dispatcher2, "dispatcher-e2e-2"), 0);
    json_t *ids = th_fault_requests(&cl, "requests.jsonl", REQUESTS, 59, path, sizeof(path));
    CU_ASSERT_PTR_NOT_NULL_FATAL(ids);
    CU_ASSERT_EQUAL_FATAL(th_fault_submit(&cl, path), 0);
    CU_ASSERT_FATAL(th_poll(some_progress, NULL, 60000));

    srand(59);
    int64_t t0 = th_now_ms();
    for (int k = 0; k < KILLS; k++) {
        int target = rand() % (WORKERS + 2);
        th_proc_t *p = target < WORKERS    ? &cl.workers[target]
                       : target == WORKERS ? &cl.dispatcher
                                           : &dispatcher2;
        kill(p->pid, SIGKILL);
        th_proc_stop(p, SIGKILL, 5000);
        th_fault_hold(1000); /* restarted a second later, as systemd would */
        int rc = target < WORKERS
                     ? th_cluster_restart_worker(&cl, target)
                     : th_cluster_start_dispatcher(
                           &cl, p, target == WORKERS ? "dispatcher-e2e" : "dispatcher-e2e-2");
        TH_EQ_INT(rc, 0);
        th_fault_hold(500);
    }
    fprintf(stderr, "  %d kills in %lld ms, %ld results out\n", KILLS,
            (long long)(th_now_ms() - t0), th_topic_count(cl.bootstrap, "gantry.results"));

    th_fault_expect_t e = {.request_ids = ids, .max_usage_events = 0, .timeout_ms = 240000};
    TH_EQ_INT(th_fault_check(&cl, &e), 0);
    json_decref(ids);
    th_proc_stop(&dispatcher2, SIGTERM, 30000);
    th_cluster_stop(&cl);
}

int main(void)
{
    static const th_test_t tests[] = {{"20 SIGKILLs of workers and dispatchers", test_kills},
                                      {NULL, NULL}};
    return th_run("fault kills", tests);
}
