/* test_fault_produce_refused.c - the services' producers with a queue of 10
 * messages (queue.buffering.max.messages), so that produces are refused
 * (queue full) all the time: nothing lost, nothing stuck. */
#include <stdlib.h>
#include <string.h>

#include "fault.h"

#define REQUESTS 1000

static th_cluster_t cl;

static void test_produce_refused(void)
{
    char path[512];
    th_cluster_opts_t o = {.latency = "5-20",
                           .workers = 2,
                           .worker_in_flight = 64,
                           .extra_config = "{\"kafka\": {\"producer_properties\":"
                                           " {\"queue.buffering.max.messages\": \"10\"}}}"};
    CU_ASSERT_EQUAL_FATAL(th_cluster_start(&cl, &o), 0);
    json_t *ids = th_fault_requests(&cl, "requests.jsonl", REQUESTS, 43, path, sizeof(path));
    CU_ASSERT_PTR_NOT_NULL_FATAL(ids);
    CU_ASSERT_EQUAL_FATAL(th_fault_submit(&cl, path), 0);

    th_fault_expect_t e = {.request_ids = ids, .max_usage_events = 1};
    TH_EQ_INT(th_fault_check(&cl, &e), 0);
    TH_EQ_INT(th_topic_count(cl.bootstrap, "gantry.dlq"), 0);
    TH_EQ_INT(cl.dispatcher.exited, 0);
    json_decref(ids);
    th_cluster_stop(&cl);
}

int main(void)
{
    static const th_test_t tests[] = {{"produces refused (queue of 10)", test_produce_refused},
                                      {NULL, NULL}};
    return th_run("fault produce refused", tests);
}
