/* test_e2e_kill.c - a worker SIGKILLed with tasks in flight: its partitions
 * move to the other workers, its tasks run again, and the lease reaper
 * releases what it held. No request is lost, none billed twice, no allocation
 * left outstanding. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"

#define REQUESTS 300

static th_cluster_t cl;

static int some_progress(void *arg)
{
    (void)arg;
    return th_sql_long(cl.conninfo, "SELECT count(*) FROM tasks WHERE status = 'succeeded'") >= 40;
}

static int all_results(void *arg)
{
    (void)arg;
    return th_topic_count(cl.bootstrap, "gantry.results") >= REQUESTS;
}

static int usage_complete(void *arg)
{
    (void)arg;
    return th_sql_long(cl.conninfo, "SELECT count(*) FROM usage") ==
           th_sql_long(cl.conninfo, "SELECT count(*) FROM tasks WHERE status = 'succeeded'");
}

static void test_kill_worker(void)
{
    th_cluster_opts_t o = {.fail_rate = 0, .latency = "100-200", .workers = 2,
                           .worker_in_flight = 64};
    CU_ASSERT_EQUAL_FATAL(th_cluster_start(&cl, &o), 0);
    char cmd[1024], path[512];
    snprintf(path, sizeof(path), "%s/requests.jsonl", cl.logdir);
    snprintf(cmd, sizeof(cmd), "%s --count %d --seed 11 > %s", th_bin("tools/gantry-loadgen"),
             REQUESTS, path);
    CU_ASSERT_EQUAL_FATAL(system(cmd), 0);
    CU_ASSERT_EQUAL_FATAL(th_cluster_submit(&cl, path), 0);

    CU_ASSERT_FATAL(th_poll(some_progress, NULL, 60000));
    long held = th_mock_stat(&cl, "outstanding_allocations");
    fprintf(stderr, "  killing worker 0 with %ld allocation(s) outstanding in the pool\n", held);
    kill(cl.workers[0].pid, SIGKILL);
    th_proc_stop(&cl.workers[0], SIGKILL, 5000);
    CU_ASSERT(th_cluster_add_worker(&cl) > 0);

    CU_ASSERT_FATAL(th_poll(all_results, NULL, 180000));
    CU_ASSERT(th_poll(usage_complete, NULL, 30000));
    CU_ASSERT(th_poll(th_cluster_released_all, &cl, 30000));

    /* Exactly one result per request. */
    json_t *results = th_kafka_read_all(cl.bootstrap, "gantry.results");
    json_t *seen = json_object();
    size_t i;
    json_t *m;
    json_array_foreach(results, i, m) {
        const char *key = json_string_value(json_object_get(m, "key"));
        if (json_object_get(seen, key))
            fprintf(stderr, "  duplicate result for %s\n", key);
        CU_ASSERT_PTR_NULL(json_object_get(seen, key));
        json_object_set_new(seen, key, json_true());
    }
    TH_EQ_INT(json_object_size(seen), REQUESTS);
    TH_EQ_INT(json_array_size(results), REQUESTS);
    json_decref(seen);
    json_decref(results);

    /* Billed once: one usage row per succeeded task, though some ran twice. */
    long rows = th_sql_long(cl.conninfo, "SELECT count(*) FROM usage");
    TH_EQ_INT(rows, th_sql_long(cl.conninfo, "SELECT count(DISTINCT task_id) FROM usage"));
    TH_EQ_INT(rows, th_sql_long(cl.conninfo,
                                "SELECT count(*) FROM tasks WHERE status = 'succeeded'"));
    long calls = th_mock_stat(&cl, "inference_ok");
    fprintf(stderr, "  %ld usage rows for %ld successful inference calls (re-runs not billed)\n",
            rows, calls);
    CU_ASSERT(calls >= rows);
    TH_EQ_INT(th_mock_stat(&cl, "outstanding_allocations"), 0);
    th_cluster_stop(&cl);
    TH_EQ_INT(cl.workers[1].status, 0);
    TH_EQ_INT(cl.workers[2].status, 0);
    TH_EQ_INT(cl.dispatcher.status, 0);
}

int main(void)
{
    static const th_test_t tests[] = {{"SIGKILL a worker mid-run", test_kill_worker},
                                      {NULL, NULL}};
    return th_run("e2e kill", tests);
}
