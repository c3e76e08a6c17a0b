/* test_e2e_cancel.c - cancellation (docs/scheduling.md): a cancel in the middle
 * of a 2,000-input batch ends it `cancelled` with its finished items, billed
 * exactly for them, no task started after the cancel, no allocation left; a
 * cancel for an unknown or a finished request is answered by an event; cancels
 * racing their jobs' completion give one result each. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"

#define BATCH 2000
#define RID "cancel-batch-1"

static th_cluster_t cl;

static int has_result(void *arg)
{
    return th_results_for(&cl, arg, NULL) >= 1;
}

static int some_done(void *arg)
{
    (void)arg;
    return th_sql_long(cl.conninfo, "SELECT count(*) FROM tasks WHERE request_id = '" RID
                                    "' AND status = 'succeeded'") >= 150;
}

static int tasks_drained(void *arg)
{
    (void)arg;
    return th_group_caught_up(cl.bootstrap, "gantry-worker", "gantry.tasks.small") &&
           th_group_caught_up(cl.bootstrap, "gantry-dispatcher", "gantry.task-results") &&
           th_group_caught_up(cl.bootstrap, "gantry-dispatcher", "gantry.control");
}

/* The value of the last gantry.results message for rid (caller frees). */
static json_t *result_of(const char *rid)
{
    json_t *all = th_kafka_read_all(cl.bootstrap, "gantry.results"), *m, *out = NULL;
    size_t i;
    json_array_foreach (all, i, m) {
        json_t *r = json_loads(json_string_value(json_object_get(m, "value")), 0, NULL);
        if (r && strcmp(json_string_value(json_object_get(r, "request_id")), rid) == 0) {
            json_decref(out);
            out = r;
        } else {
            json_decref(r);
        }
    }
    json_decref(all);
    return out;
}

/* How many cancel.<type> events name rid. */
static long events_of(const char *type, const char *rid)
{
    json_t *all = th_kafka_read_all(cl.bootstrap, "gantry.events"), *m;
    size_t i;
    long n = 0;
    json_array_foreach (all, i, m) {
        json_t *e = json_loads(json_string_value(json_object_get(m, "value")), 0, NULL);
        const char *id =
            json_string_value(json_object_get(json_object_get(e, "data"), "request_id"));
        n += id && strcmp(json_string_value(json_object_get(e, "type")), type) == 0 &&
             strcmp(id, rid) == 0;
        json_decref(e);
    }
    json_decref(all);
    return n;
}

typedef struct {
    const char *type, *rid;
} ev_wait_t;

static int has_event(void *arg)
{
    ev_wait_t *w = arg;
    return events_of(w->type, w->rid) >= 1;
}

static int cancel(const char *rid)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "%s cancel --config %s --reason e2e %s > /dev/null",
             th_bin("tools/gantry"), cl.config, rid);
    return system(cmd);
}

static void test_cancel_mid_batch(void)
{
    /* 2 workers x 8 slots, 100-200 ms a call (~20 s for the batch), cancelled at ~150:
     * the running tasks are aborted (a 50 ms cancel poll). */
    th_cluster_opts_t o = {.latency = "100-200",
                           .workers = 2,
                           .worker_in_flight = 8,
                           .extra_config = "{\"dispatcher\": {\"max_batch\": 5000},"
                                           " \"scheduling\": {\"cancel_poll_ms\": 50}}"};
    CU_ASSERT_EQUAL_FATAL(th_cluster_start(&cl, &o), 0);
    json_t *batch = json_array();
    for (int i = 0; i < BATCH; i++) {
        char in[32];
        snprintf(in, sizeof(in), "item %d", i);
        json_array_append_new(batch, json_string(in));
    }
    json_t *req = json_pack("{s:s, s:s, s:s, s:s, s:o}", "request_id", RID, "tenant_id", "t1",
                            "kind", "generate", "model", "small", "batch", batch);
    char *text = json_dumps(req, JSON_COMPACT);
    CU_ASSERT_EQUAL_FATAL(th_kafka_produce(cl.bootstrap, "gantry.requests", RID, text), 0);
    free(text);
    json_decref(req);

    CU_ASSERT_FATAL(th_poll(some_done, NULL, 120000));
    CU_ASSERT_EQUAL_FATAL(cancel(RID), 0);
    CU_ASSERT_FATAL(th_poll(has_result, RID, 60000));
    ev_wait_t acc = {"cancel.accepted", RID};
    CU_ASSERT(th_poll(has_event, &acc, 30000));
    CU_ASSERT(th_poll(tasks_drained, NULL, 60000));
    CU_ASSERT(th_poll(th_cluster_usage_complete, &cl, 30000));
    CU_ASSERT(th_poll(th_cluster_released_all, &cl, 30000));

    json_t *res = result_of(RID);
    CU_ASSERT_FATAL(res != NULL);
    TH_EQ_STR(json_string_value(json_object_get(res, "status")), "cancelled");
    TH_EQ_INT(th_results_for(&cl, RID, NULL), 1);
    json_t *outs = json_object_get(res, "outputs"), *item;
    TH_EQ_INT(json_array_size(outs), BATCH);
    long ok = 0, cancelled = 0;
    size_t i;
    json_array_foreach (outs, i, item) {
        const char *st = json_string_value(json_object_get(item, "status"));
        ok += strcmp(st, "succeeded") == 0;
        cancelled += strcmp(st, "cancelled") == 0;
        if (strcmp(st, "succeeded") == 0)
            CU_ASSERT(json_is_object(json_object_get(item, "output")));
    }
    long succeeded = th_sql_long(cl.conninfo, "SELECT count(*) FROM tasks WHERE request_id = '" RID
                                              "' AND kind = 'inference' AND status = 'succeeded'");
    long started = th_sql_long(cl.conninfo, "SELECT count(*) FROM tasks WHERE request_id = '" RID
                                            "' AND started_at IS NOT NULL");
    long aborted =
        th_sql_long(cl.conninfo, "SELECT count(*) FROM tasks WHERE request_id = '" RID
                                 "' AND status = 'cancelled' AND started_at IS NOT NULL");
    fprintf(stderr, "  cancelled after %ld of %d items: %ld started, %ld aborted while running\n",
            ok, BATCH, started, aborted);
    TH_EQ_INT(ok + cancelled, BATCH);
    TH_EQ_INT(ok, succeeded);
    CU_ASSERT(cancelled > BATCH / 2);
    CU_ASSERT(aborted > 0);
    TH_EQ_INT(started, succeeded + aborted);
    /* Billed exactly for the finished items: one usage row each, nothing else. */
    TH_EQ_INT(th_check_usage(&cl, 1), ok);
    TH_EQ_INT(th_sql_long(cl.conninfo, "SELECT count(*) FROM usage WHERE request_id = '" RID "'"),
              ok);
    /* No task started after the cancel: every allocation the mock made is a
     * started task's (no retries at fail rate 0), with every task message read. */
    TH_EQ_INT(th_mock_stat(&cl, "allocations_total"), started);
    TH_EQ_INT(th_mock_stat(&cl, "outstanding_allocations"), 0);
    TH_EQ_INT(th_sql_long(cl.conninfo, "SELECT count(*) FROM tasks WHERE request_id = '" RID
                                       "' AND status IN ('pending', 'queued', 'running')"),
              0);
    TH_EQ_INT(th_sql_long(cl.conninfo, "SELECT count(*) FROM jobs WHERE request_id = '" RID
                                       "' AND status = 'cancelled' AND cancelled_at IS NOT NULL"),
              1);
    json_decref(res);

    /* Unknown and finished requests: answered by an event, once, no loop. */
    CU_ASSERT_EQUAL(cancel("no-such-request"), 0);
    ev_wait_t unk = {"cancel.unknown", "no-such-request"};
    CU_ASSERT(th_poll(has_event, &unk, 30000));
    CU_ASSERT_EQUAL(cancel(RID), 0);
    ev_wait_t fin = {"cancel.finished", RID};
    CU_ASSERT(th_poll(has_event, &fin, 30000));
    CU_ASSERT(th_poll(tasks_drained, NULL, 30000));
    TH_EQ_INT(events_of("cancel.unknown", "no-such-request"), 1);
    TH_EQ_INT(events_of("cancel.finished", RID), 1);
    TH_EQ_INT(th_results_for(&cl, RID, NULL), 1);
    TH_EQ_INT(th_topic_count(cl.bootstrap, "gantry.dlq"), 0);
    th_cluster_stop(&cl);
    TH_EQ_INT(cl.dispatcher.status, 0);
}

#define RACERS 60

static int all_results(void *arg)
{
    (void)arg;
    return th_topic_count(cl.bootstrap, "gantry.results") >= RACERS;
}

/* Each single request is cancelled right after it is sent: some cancels come
 * before the task starts, some while it runs, some as it completes. */
static void test_cancel_races_completion(void)
{
    th_cluster_opts_t o = {.latency = "5-60", .workers = 2, .worker_in_flight = 16};
    CU_ASSERT_EQUAL_FATAL(th_cluster_start(&cl, &o), 0);
    for (int i = 0; i < RACERS; i++) {
        char rid[64], text[256];
        snprintf(rid, sizeof(rid), "race-%d", i);
        snprintf(text, sizeof(text),
                 "{\"request_id\": \"%s\", \"tenant_id\": \"t1\", \"kind\": \"generate\","
                 " \"model\": \"small\", \"input\": \"hi %d\"}",
                 rid, i);
        CU_ASSERT_EQUAL_FATAL(th_kafka_produce(cl.bootstrap, "gantry.requests", rid, text), 0);
        if (i % 3 == 0) /* the rest are cancelled after all were sent */
            CU_ASSERT_EQUAL(cancel(rid), 0);
    }
    for (int i = 0; i < RACERS; i++) {
        char rid[64];
        snprintf(rid, sizeof(rid), "race-%d", i);
        if (i % 3 != 0)
            CU_ASSERT_EQUAL(cancel(rid), 0);
    }
    CU_ASSERT_FATAL(th_poll(all_results, NULL, 120000));
    CU_ASSERT(th_poll(tasks_drained, NULL, 60000));
    CU_ASSERT(th_poll(th_cluster_usage_complete, &cl, 30000));
    CU_ASSERT(th_poll(th_cluster_released_all, &cl, 30000));
    TH_EQ_INT(th_check_one_result_each(&cl, RACERS), 0);
    long n_cancelled = 0, n_succeeded = 0;
    for (int i = 0; i < RACERS; i++) {
        char rid[64];
        snprintf(rid, sizeof(rid), "race-%d", i);
        json_t *r = result_of(rid);
        const char *st = json_string_value(json_object_get(r, "status"));
        CU_ASSERT(st && (strcmp(st, "cancelled") == 0 || strcmp(st, "succeeded") == 0));
        n_cancelled += st && strcmp(st, "cancelled") == 0;
        n_succeeded += st && strcmp(st, "succeeded") == 0;
        /* Every cancel answered: accepted, or finished when it came too late. */
        CU_ASSERT(events_of("cancel.accepted", rid) + events_of("cancel.finished", rid) +
                      events_of("cancel.unknown", rid) >=
                  1);
        json_decref(r);
    }
    fprintf(stderr, "  %ld cancelled, %ld finished first\n", n_cancelled, n_succeeded);
    /* Billed for what ran to success, whatever the result says. */
    TH_EQ_INT(th_check_usage(&cl, 1),
              th_sql_long(
                  cl.conninfo,
                  "SELECT count(*) FROM tasks WHERE kind = 'inference' AND status = 'succeeded'"));
    TH_EQ_INT(th_sql_long(cl.conninfo, "SELECT count(*) FROM jobs WHERE status = 'succeeded'"),
              n_succeeded);
    TH_EQ_INT(th_sql_long(cl.conninfo, "SELECT count(*) FROM jobs WHERE status = 'cancelled'"),
              n_cancelled);
    TH_EQ_INT(th_mock_stat(&cl, "outstanding_allocations"), 0);
    th_cluster_stop(&cl);
    TH_EQ_INT(cl.dispatcher.status, 0);
}

#define QUEUED 30

static int queued_results(void *arg)
{
    (void)arg;
    return th_topic_count(cl.bootstrap, "gantry.results") >= QUEUED;
}

/* Queue time limit (scheduling.lanes.<lane>.max_queue_ms): one worker slot,
 * 30 requests of ~250 ms at once; those that waited past 1.5 s end expired,
 * never started, with no usage. */
static void test_queue_limit(void)
{
    th_cluster_opts_t o = {.latency = "200-300",
                           .workers = 1,
                           .worker_in_flight = 1,
                           .extra_config = "{\"scheduling\": {\"lanes\": {\"small\":"
                                           " {\"max_queue_ms\": 1500}}}}"};
    CU_ASSERT_EQUAL_FATAL(th_cluster_start(&cl, &o), 0);
    char path[512];
    snprintf(path, sizeof(path), "%s/queued.jsonl", cl.logdir);
    FILE *f = fopen(path, "w");
    CU_ASSERT_FATAL(f != NULL);
    for (int i = 0; i < QUEUED; i++)
        fprintf(f,
                "{\"request_id\": \"q-%d\", \"tenant_id\": \"t1\", \"kind\": \"generate\","
                " \"model\": \"small\", \"input\": \"hi %d\"}\n",
                i, i);
    fclose(f);
    CU_ASSERT_EQUAL_FATAL(th_cluster_submit(&cl, path), 0);
    CU_ASSERT_FATAL(th_poll(queued_results, NULL, 120000));
    CU_ASSERT(th_poll(th_cluster_usage_complete, &cl, 30000));
    TH_EQ_INT(th_check_one_result_each(&cl, QUEUED), 0);
    long ok = th_sql_long(cl.conninfo, "SELECT count(*) FROM jobs WHERE status = 'succeeded'");
    long expired = th_sql_long(cl.conninfo, "SELECT count(*) FROM jobs WHERE status = 'expired'");
    fprintf(stderr, "  %ld ran, %ld expired in the queue\n", ok, expired);
    TH_EQ_INT(ok + expired, QUEUED);
    CU_ASSERT(ok > 0);
    CU_ASSERT(expired > 0);
    TH_EQ_INT(th_sql_long(cl.conninfo, "SELECT count(*) FROM tasks WHERE status = 'expired'"
                                       " AND (started_at IS NOT NULL"
                                       "  OR error_code <> 'queue_time_exceeded')"),
              0);
    /* No usage for what expired; nothing allocated for it. */
    TH_EQ_INT(th_check_usage(&cl, 1), ok);
    TH_EQ_INT(th_sql_long(cl.conninfo, "SELECT count(*) FROM usage u JOIN tasks t"
                                       " ON t.task_id = u.task_id WHERE t.status = 'expired'"),
              0);
    TH_EQ_INT(th_mock_stat(&cl, "allocations_total"), ok);
    th_cluster_stop(&cl);
    TH_EQ_INT(cl.dispatcher.status, 0);
}

#define KBATCH 2000
#define KRID "cancel-kill-1"

static int kill_some_done(void *arg)
{
    (void)arg;
    return th_sql_long(cl.conninfo, "SELECT count(*) FROM tasks WHERE request_id = '" KRID
                                    "' AND status = 'succeeded'") >= 40;
}

/* Fault: the dispatcher is SIGKILLed mid-batch and the cancel is sent while no
 * dispatcher runs. The restarted one takes the durable cancel from the control
 * topic: one result, cancelled, billed exactly for its finished items. */
static void test_cancel_dispatcher_killed(void)
{
    th_cluster_opts_t o = {.latency = "100-200",
                           .workers = 1,
                           .worker_in_flight = 8,
                           .extra_config = "{\"dispatcher\": {\"max_batch\": 5000},"
                                           " \"scheduling\": {\"cancel_poll_ms\": 50}}"};
    CU_ASSERT_EQUAL_FATAL(th_cluster_start(&cl, &o), 0);
    json_t *batch = json_array();
    for (int i = 0; i < KBATCH; i++)
        json_array_append_new(batch, json_string("item"));
    json_t *req = json_pack("{s:s, s:s, s:s, s:s, s:o}", "request_id", KRID, "tenant_id", "t1",
                            "kind", "generate", "model", "small", "batch", batch);
    char *text = json_dumps(req, JSON_COMPACT);
    CU_ASSERT_EQUAL_FATAL(th_kafka_produce(cl.bootstrap, "gantry.requests", KRID, text), 0);
    free(text);
    json_decref(req);
    CU_ASSERT_FATAL(th_poll(kill_some_done, NULL, 120000));
    kill(cl.dispatcher.pid, SIGKILL);
    th_proc_stop(&cl.dispatcher, SIGKILL, 5000);
    CU_ASSERT_EQUAL_FATAL(cancel(KRID), 0);
    CU_ASSERT_EQUAL_FATAL(th_cluster_start_dispatcher(&cl, &cl.dispatcher, "dispatcher-e2e"), 0);
    CU_ASSERT_FATAL(th_poll(has_result, KRID, 120000));
    CU_ASSERT(th_poll(tasks_drained, NULL, 60000));
    CU_ASSERT(th_poll(th_cluster_usage_complete, &cl, 30000));
    CU_ASSERT(th_poll(th_cluster_released_all, &cl, 30000));
    json_t *res = result_of(KRID), *item;
    TH_EQ_STR(json_string_value(json_object_get(res, "status")), "cancelled");
    TH_EQ_INT(th_results_for(&cl, KRID, NULL), 1);
    long ok = 0;
    size_t i;
    json_array_foreach (json_object_get(res, "outputs"), i, item)
        ok += strcmp(json_string_value(json_object_get(item, "status")), "succeeded") == 0;
    fprintf(stderr, "  cancelled with %ld of %d items after a dispatcher SIGKILL\n", ok, KBATCH);
    CU_ASSERT(ok < KBATCH);
    TH_EQ_INT(th_check_usage(&cl, 0), ok);
    TH_EQ_INT(th_mock_stat(&cl, "outstanding_allocations"), 0);
    json_decref(res);
    th_cluster_stop(&cl);
}

int main(void)
{
    static const th_test_t tests[] = {
        {"cancel mid 2,000-input batch", test_cancel_mid_batch},
        {"cancels racing completion: one result each", test_cancel_races_completion},
        {"queue time limit: expired, never run, not billed", test_queue_limit},
        {"fault: dispatcher SIGKILLed, cancel sent while it is down",
         test_cancel_dispatcher_killed},
        {NULL, NULL}};
    return th_run("e2e cancel", tests);
}
