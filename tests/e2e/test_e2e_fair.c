/* test_e2e_fair.c - priorities and tenant fairness (docs/scheduling.md): with
 * one worker slot, waiting tasks start in priority order and a low band is
 * not starved; a tenant's 5,000-input batch does not hold back another
 * tenant's single requests (their p99 time to result against an idle
 * pipeline), and the batch completes with every output. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "cluster.h"

static th_cluster_t cl;

static int64_t wall_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

/* A request as one line of JSON (caller frees). */
static char *req_text(const char *rid, const char *tenant, int prio, json_t *batch)
{
    json_t *req =
        json_pack("{s:s, s:s, s:s, s:s, s:s, s:i}", "request_id", rid, "tenant_id", tenant, "kind",
                  "generate", "model", "small", "input", "hello", "priority", prio);
    if (batch) {
        json_object_del(req, "input");
        json_object_set(req, "batch", batch);
    }
    char *text = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    return text;
}

static int send_req(const char *rid, const char *tenant, int prio, json_t *batch)
{
    char *text = req_text(rid, tenant, prio, batch);
    int rc = text ? th_kafka_produce(cl.bootstrap, "gantry.requests", rid, text) : -1;
    free(text);
    return rc;
}

/* Single requests <prefix><i> (i < n) of tenant, priority prios[i] (or
 * prio when prios is NULL), sent together by `gantry submit`. */
static int send_many(const char *prefix, int n, const char *tenant, const int *prios, int prio)
{
    size_t cap = (size_t)n * 256 + 1, len = 0;
    char *buf = calloc(1, cap);
    int rc = -1;
    for (int i = 0; buf && i < n; i++) {
        char rid[64];
        snprintf(rid, sizeof(rid), "%s%03d", prefix, prios ? prios[i] : i);
        char *line = req_text(rid, tenant, prios ? prios[i] : prio, NULL);
        if (!line || len + strlen(line) + 2 > cap) {
            free(line);
            goto out;
        }
        len += (size_t)snprintf(buf + len, cap - len, "%s\n", line);
        free(line);
    }
    const char *path = buf ? th_tmpfile(".jsonl", buf) : NULL;
    rc = path ? th_cluster_submit(&cl, path) : -1;
out:
    free(buf);
    return rc;
}

typedef struct {
    const char *like;
    long n;
} done_wait_t;

static int jobs_done(void *arg)
{
    done_wait_t *w = arg;
    char sql[256];
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM jobs WHERE request_id LIKE '%s' AND completed_at IS NOT NULL",
             w->like);
    return th_sql_long(cl.conninfo, sql) >= w->n;
}

static int task_running(void *arg)
{
    char sql[256];
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM tasks WHERE request_id = '%s'"
             " AND started_at IS NOT NULL",
             (const char *)arg);
    return th_sql_long(cl.conninfo, sql) >= 1;
}

static int nothing_waiting(void *arg)
{
    (void)arg;
    return th_sql_long(cl.conninfo, "SELECT count(*) FROM tasks WHERE hold IS NOT NULL"
                                    " AND status = 'pending'") == 0;
}

/* Pairs (x, y) of the tasks of requests LIKE like where x started while y
 * was waiting (its job stored) and x has the lower priority. created_at is
 * when y's insert began, not when it committed: one that began just before
 * x was released may not have been visible to the releaser yet, so y counts
 * as waiting only from 250 ms after it (an insert commits well within that;
 * a race seen once under the full suite: 8 started before 9, whose insert
 * was still open). */
static long inversions(const char *like)
{
    char sql[1024];
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM tasks x JOIN tasks y ON x.started_at < y.started_at"
             " JOIN jobs jy ON jy.request_id = y.request_id"
             " WHERE x.request_id LIKE '%s' AND y.request_id LIKE '%s'"
             "  AND jy.created_at < x.started_at - interval '250 milliseconds'"
             "  AND x.priority < y.priority",
             like, like);
    return th_sql_long(cl.conninfo, sql);
}

/* One lane with one slot, one worker slot: what waits starts by priority. */
static void test_priority_order(void)
{
    th_cluster_opts_t o = {.latency = "500-500",
                           .workers = 1,
                           .worker_in_flight = 1,
                           .extra_config =
                               "{\"scheduling\": {\"lanes\": {\"small\": {\"slots\": 1}}}}"};
    CU_ASSERT_EQUAL_FATAL(th_cluster_start(&cl, &o), 0);
    /* A blocker holds the slot; then one request per priority, shuffled. */
    CU_ASSERT_EQUAL_FATAL(send_req("block-1", "t1", 0, NULL), 0);
    CU_ASSERT_FATAL(th_poll(task_running, "block-1", 30000));
    static const int order[] = {3, 7, 0, 9, 5, 1, 8, 2, 6, 4};
    CU_ASSERT_EQUAL_FATAL(send_many("prio-", 10, "t1", order, 0), 0);
    done_wait_t w = {"prio-%", 10};
    CU_ASSERT_FATAL(th_poll(jobs_done, &w, 60000));
    json_t *seq = th_sql_column(cl.conninfo, "SELECT priority FROM tasks WHERE request_id LIKE "
                                             "'prio-%' ORDER BY started_at");
    char got[64] = "";
    size_t i;
    json_t *v;
    json_array_foreach (seq, i, v) {
        strcat(got, json_string_value(v));
        strcat(got, i + 1 < json_array_size(seq) ? "," : "");
    }
    json_decref(seq);
    fprintf(stderr, "  start order of priorities: %s\n", got);
    /* Never one of lower priority while a higher one waited; when all ten
     * were stored before the blocker ended (500 ms), the order is exact. */
    TH_EQ_INT(inversions("prio-%"), 0);
    if (th_sql_long(cl.conninfo, "SELECT count(*) FROM jobs j WHERE request_id LIKE 'prio-%'"
                                 " AND created_at > (SELECT completed_at FROM tasks"
                                 "  WHERE request_id = 'block-1')") == 0)
        TH_EQ_STR(got, "9,8,7,6,5,4,3,2,1,0");
    else
        fprintf(stderr, "  (some were stored after the blocker ended: order checked by pairs)\n");

    /* Not starved: one priority-0 task among 20 of priority 3 (weights 1:8)
     * starts after some of them, well before the last. */
    CU_ASSERT_EQUAL_FATAL(send_req("block-2", "t1", 0, NULL), 0);
    CU_ASSERT_FATAL(th_poll(task_running, "block-2", 30000));
    CU_ASSERT_EQUAL_FATAL(send_req("low-0", "t1", 0, NULL), 0);
    CU_ASSERT_EQUAL_FATAL(send_many("low-3-", 20, "t1", NULL, 3), 0);
    done_wait_t w2 = {"low-%", 21};
    CU_ASSERT_FATAL(th_poll(jobs_done, &w2, 60000));
    long pos = th_sql_long(cl.conninfo, "SELECT count(*) FROM tasks WHERE request_id LIKE 'low-3-%'"
                                        " AND started_at < (SELECT started_at FROM tasks"
                                        "  WHERE request_id = 'low-0')");
    fprintf(stderr, "  the priority-0 task started after %ld of 20 priority-3 tasks\n", pos);
    /* Starvation is what is checked: it never starts last. That it waits
     * for some is the rule only when they all waited with it, i.e. were
     * stored before the blocker ended (a loaded machine may not manage 21
     * requests in 500 ms, and then the slot is free for low-0 at once). */
    CU_ASSERT(pos <= 12);
    if (th_sql_long(cl.conninfo, "SELECT count(*) FROM jobs WHERE request_id LIKE 'low-%'"
                                 " AND created_at > (SELECT completed_at FROM tasks"
                                 "  WHERE request_id = 'block-2')") == 0) {
        CU_ASSERT(pos >= 2);
    } else {
        fprintf(stderr, "  (some were stored after the blocker ended: only the bound checked)\n");
    }
    CU_ASSERT(th_poll(nothing_waiting, NULL, 10000));
    TH_EQ_INT(th_check_one_result_each(&cl, 33), 0);
    th_cluster_stop(&cl);
    TH_EQ_INT(cl.dispatcher.status, 0);
}

#define ABATCH 5000
#define BREQS 100
#define SLOTS 16

static int cmp_long(const void *a, const void *b)
{
    long x = *(const long *)a, y = *(const long *)b;
    return (x > y) - (x < y);
}

/* Sends tenant B's BREQS single requests (ids <tag>-NNN) at prio and
 * returns the p99 of their time to result (ms from just before sending to
 * the job's completion), or -1. */
static long b_round(const char *tag, int prio)
{
    int64_t t0 = wall_ms();
    char prefix[48];
    snprintf(prefix, sizeof(prefix), "%s-", tag);
    if (send_many(prefix, BREQS, "tenant-b", NULL, prio) != 0)
        return -1;
    char like[48];
    snprintf(like, sizeof(like), "%s-%%", tag);
    done_wait_t w = {like, BREQS};
    if (!th_poll(jobs_done, &w, 120000))
        return -1;
    char sql[1024];
    snprintf(sql, sizeof(sql),
             "SELECT (extract(epoch FROM completed_at) * 1000)::bigint - %lld FROM jobs"
             " WHERE request_id LIKE '%s'",
             (long long)t0, like);
    json_t *col = th_sql_column(cl.conninfo, sql);
    long ms[BREQS];
    size_t n = json_array_size(col);
    for (size_t i = 0; i < n && i < BREQS; i++)
        ms[i] = atol(json_string_value(json_array_get(col, i)));
    json_decref(col);
    if (n != BREQS)
        return -1;
    qsort(ms, BREQS, sizeof(ms[0]), cmp_long);
    snprintf(
        sql, sizeof(sql),
        "SELECT (SELECT max(extract(epoch FROM j.created_at) * 1000)::bigint - %lld FROM jobs j"
        "  WHERE j.request_id LIKE '%s') || ' ms stored, tasks started by ' ||"
        " (SELECT max(extract(epoch FROM t.started_at) * 1000)::bigint - %lld FROM tasks t"
        "  WHERE t.request_id LIKE '%s') || ' ms'",
        (long long)t0, like, (long long)t0, like);
    json_t *st = th_sql_column(cl.conninfo, sql);
    fprintf(stderr, "  %s: all %s\n", tag, json_string_value(json_array_get(st, 0)));
    json_decref(st);
    fprintf(stderr, "  %s: B p50 %ld ms, p99 %ld ms\n", tag, ms[BREQS / 2],
            ms[BREQS * 99 / 100 - 1]);
    return ms[BREQS * 99 / 100 - 1];
}

static int a_started(void *arg)
{
    char sql[256];
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM tasks WHERE request_id = '%s' AND started_at IS NOT NULL",
             (const char *)arg);
    return th_sql_long(cl.conninfo, sql) >= 2 * SLOTS;
}

static int a_done(void *arg)
{
    return th_results_for(&cl, arg, NULL) >= 1;
}

/* A's batch: every item succeeded with its output. */
static void check_a(const char *rid)
{
    json_t *all = th_kafka_read_all(cl.bootstrap, "gantry.results"), *m, *res = NULL;
    size_t i;
    json_array_foreach (all, i, m) {
        if (strcmp(json_string_value(json_object_get(m, "key")), rid) == 0) {
            json_decref(res);
            res = json_loads(json_string_value(json_object_get(m, "value")), 0, NULL);
        }
    }
    json_decref(all);
    CU_ASSERT_FATAL(res != NULL);
    TH_EQ_STR(json_string_value(json_object_get(res, "status")), "succeeded");
    json_t *outs = json_object_get(res, "outputs"), *item;
    TH_EQ_INT(json_array_size(outs), ABATCH);
    long ok = 0;
    json_array_foreach (outs, i, item)
        ok += strcmp(json_string_value(json_object_get(item, "status")), "succeeded") == 0 &&
              json_is_object(json_object_get(item, "output"));
    TH_EQ_INT(ok, ABATCH);
    TH_EQ_INT(th_results_for(&cl, rid, NULL), 1);
    json_decref(res);
}

/* Sends A's batch at priority 0 and waits until it fills the lane. */
static void start_batch(const char *arid)
{
    json_t *batch = json_array();
    for (int i = 0; i < ABATCH; i++) {
        char in[32];
        snprintf(in, sizeof(in), "item %d", i);
        json_array_append_new(batch, json_string(in));
    }
    int rc = send_req(arid, "tenant-a", 0, batch);
    json_decref(batch);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    /* A fills the lane first (about a second in). */
    CU_ASSERT_FATAL(th_poll(a_started, (void *)arid, 60000));
}

/* The lane never holds more than its slots in flight. */
static void check_in_flight(void)
{
    long inflight =
        th_sql_long(cl.conninfo, "SELECT count(*) FROM tasks WHERE lane = 'small'"
                                 " AND (status IN ('queued', 'running') OR hold = 'releasing')");
    CU_ASSERT(inflight >= 0 && inflight <= SLOTS);
}

static long waiting_of(const char *tenant)
{
    char sql[256];
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM tasks WHERE tenant_id = '%s' AND hold = 'waiting'"
             " AND status = 'pending'",
             tenant);
    return th_sql_long(cl.conninfo, sql);
}

/* 2 workers x 8 slots, the lane's 16 slots from configuration. */
static void test_fairness(void)
{
    th_cluster_opts_t o = {.latency = "120-180",
                           .workers = 2,
                           .worker_in_flight = 8,
                           .extra_config =
                               "{\"dispatcher\": {\"max_batch\": 5000},"
                               " \"scheduling\": {\"lanes\": {\"small\": {\"slots\": 16}}}}"};
    CU_ASSERT_EQUAL_FATAL(th_cluster_start(&cl, &o), 0);
    /* The workers have joined their group: the idle figure is the pipeline's. */
    CU_ASSERT_EQUAL_FATAL(send_req("warm-1", "tenant-b", 0, NULL), 0);
    done_wait_t warm = {"warm-%", 1};
    CU_ASSERT_FATAL(th_poll(jobs_done, &warm, 60000));
    long idle = b_round("idle", 5);
    CU_ASSERT_FATAL(idle > 0);
    /* One batch of A's, B twice while it runs: at priority 5, then at A's. */
    start_batch("batch-a");
    check_in_flight();
    long hi = b_round("hi", 5);
    CU_ASSERT_FATAL(hi > 0);
    check_in_flight();
    long left = waiting_of("tenant-a");
    fprintf(stderr, "  A's tasks still waiting: %ld\n", left);
    CU_ASSERT_FATAL(left > 1000); /* the second round also runs behind the batch */
    long same = b_round("same", 0);
    CU_ASSERT_FATAL(same > 0);
    check_in_flight();
    CU_ASSERT(waiting_of("tenant-a") > 0);
    CU_ASSERT_FATAL(th_poll(a_done, "batch-a", 180000));
    check_a("batch-a");
    fprintf(stderr,
            "  B p99: idle %ld ms; behind A's batch at priority 5: %ld ms (%.2fx); at the same "
            "priority: %ld ms (%.2fx)\n",
            idle, hi, (double)hi / (double)idle, same, (double)same / (double)idle);
    CU_ASSERT(hi <= 2 * idle);
    CU_ASSERT(same <= 3 * idle);
    CU_ASSERT(th_poll(nothing_waiting, NULL, 10000));
    TH_EQ_INT(th_check_one_result_each(&cl, 3 * BREQS + 2), 0);
    TH_EQ_INT(th_sql_long(cl.conninfo, "SELECT count(*) FROM tasks WHERE kind = 'inference'"
                                       " AND status <> 'succeeded'"),
              0);
    TH_EQ_INT(th_topic_count(cl.bootstrap, "gantry.dlq"), 0);
    th_cluster_stop(&cl);
    TH_EQ_INT(cl.dispatcher.status, 0);
}

int main(void)
{
    static const th_test_t tests[] = {
        {"priorities: one slot, waiting tasks start by priority", test_priority_order},
        {"fairness: a 5,000-input batch against single requests", test_fairness},
        {NULL, NULL}};
    return th_run("e2e fair", tests);
}
