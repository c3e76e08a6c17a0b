/* test_fault_broker_down.c - the embedded Kafka's broker down for 20 s
 * mid-run (its control channel): nothing lost, nothing stuck. */
#include <stdlib.h>
#include <string.h>

#include "fault.h"

#define REQUESTS 1500
#define DOWN_MS 20000

static th_cluster_t cl;

static int some_progress(void *arg)
{
    (void)arg;
    return th_sql_long(cl.conninfo, "SELECT count(*) FROM tasks WHERE status = 'succeeded'") >= 100;
}

static void test_broker_down(void)
{
    char path[512];
    th_cluster_opts_t o = {.latency = "50-150", .workers = 2, .worker_in_flight = 32};
    CU_ASSERT_EQUAL_FATAL(th_cluster_start(&cl, &o), 0);
    json_t *ids = th_fault_requests(&cl, "requests.jsonl", REQUESTS, 41, path, sizeof(path));
    CU_ASSERT_PTR_NOT_NULL_FATAL(ids);
    CU_ASSERT_EQUAL_FATAL(th_fault_submit(&cl, path), 0);
    CU_ASSERT_FATAL(th_poll(some_progress, NULL, 60000));

    CU_ASSERT_EQUAL_FATAL(th_cluster_broker_down(&cl, 1), 0);
    fprintf(stderr, "  broker 1 (all of Kafka) down for %d s\n", DOWN_MS / 1000);
    th_fault_hold(DOWN_MS);
    CU_ASSERT_EQUAL_FATAL(th_cluster_broker_up(&cl, 1), 0);
    TH_EQ_INT(cl.dispatcher.exited, 0);

    /* A rebalance after the outage may run a task twice: its usage event repeats. */
    th_fault_expect_t e = {.request_ids = ids, .max_usage_events = 0};
    TH_EQ_INT(th_fault_check(&cl, &e), 0);
    TH_EQ_INT(th_topic_count(cl.bootstrap, "gantry.dlq"), 0);
    json_decref(ids);
    th_cluster_stop(&cl);
}

int main(void)
{
    static const th_test_t tests[] = {{"broker down for 20 s mid-run", test_broker_down},
                                      {NULL, NULL}};
    return th_run("fault broker down", tests);
}
