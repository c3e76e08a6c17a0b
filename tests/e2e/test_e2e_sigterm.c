/* test_e2e_sigterm.c - a worker with 200 tasks in flight gets SIGTERM. With a
 * drain shorter than the tasks it exits 0 in time, handing the rest back
 * (allocations released, offsets not committed); with a long drain it finishes
 * them all. Either way a second worker takes over and every task ends once:
 * one task result per task, one result per request, one usage row per
 * succeeded task, no allocation left at HostedAI. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "cluster.h"

#define REQUESTS 260
#define IN_FLIGHT 200

static th_cluster_t cl;

static int in_flight_reached(void *arg)
{
    (void)arg;
    return th_mock_stat(&cl, "outstanding_allocations") >= IN_FLIGHT;
}

static int all_results(void *arg)
{
    (void)arg;
    return th_topic_count(cl.bootstrap, "gantry.results") >= REQUESTS;
}

static const char *requests_file_n(const char *prefix, int n)
{
    size_t cap = (size_t)n * 200, off = 0;
    char *text = malloc(cap);
    for (int i = 0; i < n; i++)
        off += (size_t)snprintf(text + off, cap - off,
                                "{\"schema\":\"gantry.request.v1\",\"request_id\":\"%s-%04d\","
                                "\"tenant_id\":\"t1\",\"kind\":\"generate\","
                                "\"model\":\"small\",\"input\":\"hello %d\"}\n",
                                prefix, i, i);
    const char *path = th_tmpfile(".jsonl", text);
    free(text);
    return path;
}

static const char *requests_file(const char *prefix)
{
    return requests_file_n(prefix, REQUESTS);
}

/* Counts distinct values of field in the JSON values of topic; *total gets
 * the number of messages. */
static long distinct(const char *topic, const char *field, long *total)
{
    json_t *all = th_kafka_read_all(cl.bootstrap, topic);
    json_t *seen = json_object();
    size_t i;
    json_t *m;
    json_array_foreach (all, i, m) {
        json_t *v = json_loads(json_string_value(json_object_get(m, "value")), 0, NULL);
        const char *id = json_string_value(json_object_get(v, field));
        if (id && json_object_get(seen, id))
            fprintf(stderr, "  duplicate %s %s on %s\n", field, id, topic);
        if (id)
            json_object_set_new(seen, id, json_true());
        json_decref(v);
    }
    long n = (long)json_object_size(seen);
    *total = (long)json_array_size(all);
    json_decref(seen);
    json_decref(all);
    return n;
}

/* Runs the scenario with worker.drain_ms = drain_ms and inference latency
 * latency; returns the number of inference calls the mock served. */
static long run(const char *prefix, int drain_ms, const char *latency, int expect_abort)
{
    char extra[256];
    snprintf(extra, sizeof(extra), "{\"worker\": {\"drain_ms\": %d}}", drain_ms);
    th_cluster_opts_t o = {
        .latency = latency, .workers = 1, .worker_in_flight = 256, .extra_config = extra};
    CU_ASSERT_FATAL(th_cluster_start(&cl, &o) == 0);
    CU_ASSERT_FATAL(th_cluster_submit(&cl, requests_file(prefix)) == 0);
    CU_ASSERT_FATAL(th_poll(in_flight_reached, NULL, 90000));

    long held = th_mock_stat(&cl, "outstanding_allocations");
    int64_t t0 = th_now_ms();
    int st = th_proc_stop(&cl.workers[0], SIGTERM, drain_ms + 60000);
    int64_t took = th_now_ms() - t0;
    /* Right away, before any lease could expire: the worker released them. */
    long left = th_mock_stat(&cl, "outstanding_allocations");
    fprintf(stderr,
            "  SIGTERM with %ld allocation(s) held, drain %d ms: exit status %d after %lld"
            " ms, %ld allocation(s) left\n",
            held, drain_ms, st, (long long)took, left);
    CU_ASSERT(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CU_ASSERT(took < drain_ms + 10000);
    TH_EQ_INT(left, 0);
    TH_EQ_INT(th_log_count(&cl, "worker-0.log", "aborting") > 0, expect_abort);
    CU_ASSERT(th_log_count(&cl, "worker-0.log", "stopped"));

    CU_ASSERT_FATAL(th_cluster_add_worker(&cl) == 1);
    CU_ASSERT_FATAL(th_poll(all_results, NULL, 120000));
    CU_ASSERT(th_poll(th_cluster_usage_complete, &cl, 30000));
    CU_ASSERT(th_poll(th_cluster_released_all, &cl, 30000));

    long total = 0;
    TH_EQ_INT(distinct("gantry.results", "request_id", &total), REQUESTS);
    TH_EQ_INT(total, REQUESTS);
    TH_EQ_INT(distinct("gantry.task-results", "task_id", &total), REQUESTS);
    TH_EQ_INT(total, REQUESTS);
    long rows = th_sql_long(cl.conninfo, "SELECT count(*) FROM usage");
    TH_EQ_INT(rows, REQUESTS);
    TH_EQ_INT(th_sql_long(cl.conninfo, "SELECT count(DISTINCT task_id) FROM usage"), rows);
    TH_EQ_INT(th_sql_long(cl.conninfo, "SELECT count(*) FROM tasks WHERE status = 'succeeded'"),
              rows);
    TH_EQ_INT(th_mock_stat(&cl, "outstanding_allocations"), 0);
    long calls = th_mock_stat(&cl, "inference_ok");
    fprintf(stderr, "  %ld inference calls for %d tasks\n", calls, REQUESTS);
    th_cluster_stop(&cl);
    TH_EQ_INT(cl.workers[1].status, 0);
    TH_EQ_INT(cl.dispatcher.status, 0);
    /* The next run's cluster logs to the same directory name. */
    char kept[300];
    snprintf(kept, sizeof(kept), "%s-%s", cl.logdir, prefix);
    if (rename(cl.logdir, kept) == 0)
        fprintf(stderr, "  logs kept in %s\n", kept);
    return calls;
}

/* Tasks take 5-7 s, the drain 2 s: those in flight are handed back and run
 * again on the second worker (billed once). */
static void test_short_drain(void)
{
    long calls = run("short", 2000, "5000-7000", 1);
    CU_ASSERT(calls >= REQUESTS);
}

/* Tasks take 3-4 s (long enough for 200 to be in flight at once on a slow
 * machine), the drain 30 s: the worker finishes all it started, so nothing
 * runs twice. */
static void test_long_drain(void)
{
    long calls = run("long", 30000, "3000-4000", 0);
    TH_EQ_INT(calls, REQUESTS);
}

#define DREQUESTS 1500

static long jobs_wanted;

static int jobs_in(void *arg)
{
    (void)arg;
    return th_sql_long(cl.conninfo, "SELECT count(*) FROM jobs") >= jobs_wanted;
}

static int all_dresults(void *arg)
{
    (void)arg;
    return th_topic_count(cl.bootstrap, "gantry.results") >= DREQUESTS;
}

/* A dispatcher with dispatcher.drain_ms 0 stops in the middle of intake and
 * coordination: queries fail as "closed", which must not turn into dead
 * letters; what it held is redelivered to the next dispatcher. */
static void test_dispatcher_no_drain(void)
{
    th_cluster_opts_t o = {.latency = "5-20",
                           .workers = 1,
                           .worker_in_flight = 64,
                           .extra_config = "{\"dispatcher\": {\"drain_ms\": 0}}"};
    CU_ASSERT_FATAL(th_cluster_start(&cl, &o) == 0);
    CU_ASSERT_FATAL(th_cluster_submit(&cl, requests_file_n("disp", DREQUESTS)) == 0);
    jobs_wanted = DREQUESTS / 5;
    CU_ASSERT_FATAL(th_poll(jobs_in, NULL, 60000));
    long jobs = th_sql_long(cl.conninfo, "SELECT count(*) FROM jobs");
    int64_t t0 = th_now_ms();
    int st = th_proc_stop(&cl.dispatcher, SIGTERM, 60000);
    fprintf(stderr, "  dispatcher stopped with no drain at %ld jobs: status %d after %lld ms\n",
            jobs, st, (long long)(th_now_ms() - t0));
    CU_ASSERT(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0);

    char log2[512];
    snprintf(log2, sizeof(log2), "%s/dispatcher-2.log", cl.logdir);
    const char *dargv[] = {th_bin("dispatcher/gantry-dispatcher"),
                           "--config",
                           cl.config,
                           "--id",
                           "dispatcher-e2e-2",
                           NULL};
    CU_ASSERT_FATAL(th_proc_start(&cl.dispatcher, dargv, log2) == 0);
    CU_ASSERT_FATAL(th_poll(all_dresults, NULL, 120000));
    CU_ASSERT(th_poll(th_cluster_usage_complete, &cl, 30000));
    CU_ASSERT(th_poll(th_cluster_released_all, &cl, 30000));

    long total = 0;
    TH_EQ_INT(distinct("gantry.results", "request_id", &total), DREQUESTS);
    TH_EQ_INT(total, DREQUESTS);
    TH_EQ_INT(th_topic_count(cl.bootstrap, "gantry.dlq"), 0);
    TH_EQ_INT(th_sql_long(cl.conninfo, "SELECT count(*) FROM jobs"), DREQUESTS);
    long rows = th_sql_long(cl.conninfo, "SELECT count(*) FROM usage");
    TH_EQ_INT(rows, DREQUESTS);
    TH_EQ_INT(th_sql_long(cl.conninfo, "SELECT count(DISTINCT task_id) FROM usage"), rows);
    fprintf(stderr, "  messages left undone at the stop (then redelivered): %s\n",
            th_log_count(&cl, "dispatcher.log", "left undone") ? "yes" : "none");
    th_cluster_stop(&cl);
    TH_EQ_INT(cl.workers[0].status, 0);
    TH_EQ_INT(cl.dispatcher.status, 0);
    char kept[300];
    snprintf(kept, sizeof(kept), "%s-disp", cl.logdir);
    rename(cl.logdir, kept);
}

int main(void)
{
    static const th_test_t tests[] = {
        {"SIGTERM, drain shorter than the tasks: hand back", test_short_drain},
        {"SIGTERM, drain long enough: finish everything", test_long_drain},
        {"SIGTERM to a dispatcher with no drain: nothing dead-lettered", test_dispatcher_no_drain},
        {NULL, NULL},
    };
    return th_run("e2e sigterm", tests);
}
