/* test_e2e_kill.c - a worker SIGKILLed with tasks in flight: its partitions
 * move to the other workers, its tasks run again, and the lease reaper
 * releases what it held. No request is lost, none billed twice, no allocation
 * left outstanding. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"

#define REQUESTS 300
#define MOCK_KEY "e2e-secret-key" /* cluster.c's */

static th_cluster_t cl;

static int all_results(void *arg)
{
    (void)arg;
    return th_topic_count(cl.bootstrap, "gantry.results") >= REQUESTS;
}

/* The ids of the allocations the mock holds for worker-e2e-0 (its labels). */
static json_t *held_by_worker0(void)
{
    char url[512];
    snprintf(url, sizeof(url), "%s/v1/allocations?label.holder=worker-e2e-0", cl.mock_url);
    json_t *doc = th_http_json(url, MOCK_KEY), *ids = json_array(), *a;
    size_t i;
    json_array_foreach (json_object_get(doc, "allocations"), i, a)
        json_array_append(ids, json_object_get(a, "allocation_id"));
    json_decref(doc);
    return ids;
}

static int worker0_holds(void *arg)
{
    (void)arg;
    json_t *ids = held_by_worker0();
    size_t n = json_array_size(ids);
    json_decref(ids);
    return n >= 5;
}

static void test_kill_worker(void)
{
    th_cluster_opts_t o = {
        .fail_rate = 0, .latency = "100-200", .workers = 2, .worker_in_flight = 64};
    CU_ASSERT_EQUAL_FATAL(th_cluster_start(&cl, &o), 0);
    char cmd[1024], path[512];
    snprintf(path, sizeof(path), "%s/requests.jsonl", cl.logdir);
    snprintf(cmd, sizeof(cmd), "%s --count %d --seed 11 > %s", th_bin("tools/gantry-loadgen"),
             REQUESTS, path);
    CU_ASSERT_EQUAL_FATAL(system(cmd), 0);
    CU_ASSERT_EQUAL_FATAL(th_cluster_submit(&cl, path), 0);

    /* Killed while it holds allocations (the run takes seconds: poll from the submit). */
    CU_ASSERT_FATAL(th_poll(worker0_holds, NULL, 60000));
    kill(cl.workers[0].pid, SIGKILL);
    th_proc_stop(&cl.workers[0], SIGKILL, 5000);
    /* What it held at its death (an allocate answered after that is the reaper's too). */
    json_t *held = held_by_worker0();
    fprintf(stderr, "  killed worker 0 holding %zu allocation(s)\n", json_array_size(held));
    CU_ASSERT(json_array_size(held) > 0);
    CU_ASSERT(th_cluster_add_worker(&cl) > 0);

    CU_ASSERT_FATAL(th_poll(all_results, NULL, 180000));
    CU_ASSERT(th_poll(th_cluster_usage_complete, &cl, 30000));
    CU_ASSERT(th_poll(th_cluster_released_all, &cl, 30000));

    /* Exactly one result per request; billed once, though some tasks ran twice. */
    th_check_one_result_each(&cl, REQUESTS);
    long rows = th_check_billed_once(&cl);
    long calls = th_mock_stat(&cl, "inference_ok");
    fprintf(stderr, "  %ld usage rows for %ld successful inference calls (re-runs not billed)\n",
            rows, calls);
    CU_ASSERT(calls >= rows);
    TH_EQ_INT(th_mock_stat(&cl, "outstanding_allocations"), 0);
    /* Nobody but the reaper can have released a dead worker's allocations. */
    size_t i;
    json_t *id;
    long reaped = 0;
    json_array_foreach (held, i, id) {
        char needle[160];
        snprintf(needle, sizeof(needle), "reaped allocation %s ", json_string_value(id));
        reaped += th_log_count(&cl, "dispatcher.log", needle) > 0;
    }
    fprintf(stderr, "  the reaper released %ld of them\n", reaped);
    TH_EQ_INT(reaped, json_array_size(held));
    json_decref(held);
    th_cluster_stop(&cl);
    TH_EQ_INT(cl.workers[1].status, 0);
    TH_EQ_INT(cl.workers[2].status, 0);
    TH_EQ_INT(cl.dispatcher.status, 0);
}

int main(void)
{
    static const th_test_t tests[] = {{"SIGKILL a worker mid-run", test_kill_worker}, {NULL, NULL}};
    return th_run("e2e kill", tests);
}
