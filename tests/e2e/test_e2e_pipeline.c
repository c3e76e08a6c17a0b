/* test_e2e_pipeline.c - the whole system on real processes and sockets:
 * 1,000 requests (malformed, duplicated, one batch of 50) through embedded
 * Kafka, the dispatcher, two workers and a mock HostedAI failing 10% of calls.
 * Every good request gets exactly one result, every bad one is in the DLQ with
 * its original bytes, usage rows match successful inference calls, and no
 * allocation is left outstanding. */
#include <stdlib.h>
#include <string.h>

#include "base64.h"
#include "cluster.h"
#include "message.h"

static th_cluster_t cl;
static json_t *good_ids;  /* request_id -> true */
static json_t *bad_lines; /* original bytes -> count */

/* Splits the generated requests into good ids and bad lines, as the dispatcher must. */
static void classify_lines(const char *path)
{
    FILE *f = fopen(path, "r");
    char line[65536];
    good_ids = json_object();
    bad_lines = json_object();
    while (f && fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\n")] = 0;
        json_t *o = json_loads(line, 0, NULL);
        const char *id = json_string_value(json_object_get(o, "request_id"));
        if (o && id && json_object_get(o, "schema") && !strstr(id, "-bad-"))
            json_object_set_new(good_ids, id, json_true());
        else {
            json_t *n = json_object_get(bad_lines, line);
            json_object_set_new(bad_lines, line, json_integer(n ? json_integer_value(n) + 1 : 1));
        }
        json_decref(o);
    }
    if (f)
        fclose(f);
}

static int results_complete(void *arg)
{
    (void)arg;
    return th_topic_count(cl.bootstrap, "gantry.results") >= (long)json_object_size(good_ids);
}

static int jobs_settled(void *arg)
{
    (void)arg;
    return th_sql_long(cl.conninfo,
                       "SELECT count(*) FROM jobs WHERE status IN ('running','completing')") == 0;
}

/* The ledger trails the results: wait until it has a row per successful call. */
static int usage_caught_up(void *arg)
{
    (void)arg;
    return th_sql_long(cl.conninfo, "SELECT count(*) FROM usage") >=
           th_mock_stat(&cl, "inference_ok");
}

/* The usage row mapping: each field of a usage event on Kafka lands in its
 * row unchanged (allocation seconds to the millisecond). */
static void check_usage_mapping(void)
{
    json_t *events = th_kafka_read_all(cl.bootstrap, "gantry.usage");
    CU_ASSERT(json_array_size(events) > 0);
    size_t i;
    json_t *m;
    int checked = 0;
    json_array_foreach (events, i, m) {
        if (checked == 25)
            break;
        json_t *e = json_loads(json_string_value(json_object_get(m, "value")), 0, NULL);
        const char *id = json_string_value(json_object_get(e, "event_id"));
        TH_EQ_STR(json_string_value(json_object_get(m, "key")), id);
        json_t *d = json_object_get(e, "durations");
        char sql[2048];
        snprintf(sql, sizeof(sql),
                 "SELECT count(*) FROM usage WHERE event_id = '%s' AND request_id = '%s'"
                 " AND task_id = '%s' AND tenant_id = '%s' AND model = '%s' AND provider = '%s'"
                 " AND pool = '%s' AND allocation_id = '%s'"
                 " AND allocation_seconds = round(%.6f, 3) AND tflops = %g AND vram_mb = %lld"
                 " AND prompt_tokens = %lld AND completion_tokens = %lld"
                 " AND request_bytes = %lld AND response_bytes = %lld AND attempts = %lld"
                 " AND allocate_ms = %lld AND inference_ms = %lld AND release_ms = %lld"
                 " AND total_ms = %lld AND occurred_at = '%s'::timestamptz",
                 id, json_string_value(json_object_get(e, "request_id")),
                 json_string_value(json_object_get(e, "task_id")),
                 json_string_value(json_object_get(e, "tenant_id")),
                 json_string_value(json_object_get(e, "model")),
                 json_string_value(json_object_get(e, "provider")),
                 json_string_value(json_object_get(e, "pool")),
                 json_string_value(json_object_get(e, "allocation_id")),
                 json_number_value(json_object_get(e, "allocation_seconds")),
                 json_number_value(json_object_get(e, "tflops")),
                 (long long)json_integer_value(json_object_get(e, "vram_mb")),
                 (long long)json_integer_value(json_object_get(e, "prompt_tokens")),
                 (long long)json_integer_value(json_object_get(e, "completion_tokens")),
                 (long long)json_integer_value(json_object_get(e, "request_bytes")),
                 (long long)json_integer_value(json_object_get(e, "response_bytes")),
                 (long long)json_integer_value(json_object_get(e, "attempts")),
                 (long long)json_integer_value(json_object_get(d, "allocate_ms")),
                 (long long)json_integer_value(json_object_get(d, "inference_ms")),
                 (long long)json_integer_value(json_object_get(d, "release_ms")),
                 (long long)json_integer_value(json_object_get(d, "total_ms")),
                 json_string_value(json_object_get(e, "occurred_at")));
        long n = th_sql_long(cl.conninfo, sql);
        if (n != 1)
            fprintf(stderr, "  usage event %s does not map to its row\n", id);
        TH_EQ_INT(n, 1);
        checked++;
        json_decref(e);
    }
    json_decref(events);
}

static void test_pipeline(void)
{
    th_cluster_opts_t o = {.fail_rate = 0.1, .latency = "5-20", .workers = 2};
    CU_ASSERT_EQUAL_FATAL(th_cluster_start(&cl, &o), 0);

    char cmd[1024], path[512];
    snprintf(path, sizeof(path), "%s/requests.jsonl", cl.logdir);
    snprintf(cmd, sizeof(cmd), "%s --count 1000 --bad 30 --dup 20 --batch 50 --seed 7 > %s",
             th_bin("tools/gantry-loadgen"), path);
    CU_ASSERT_EQUAL_FATAL(system(cmd), 0);
    classify_lines(path);
    TH_EQ_INT(json_object_size(good_ids), 950);
    CU_ASSERT_EQUAL_FATAL(th_cluster_submit(&cl, path), 0);

    CU_ASSERT_FATAL(th_poll(results_complete, NULL, 180000));
    CU_ASSERT(th_poll(jobs_settled, NULL, 30000));

    /* Exactly one result per good request, none for anything else. */
    json_t *results = th_kafka_read_all(cl.bootstrap, "gantry.results");
    json_t *seen = json_object();
    size_t i;
    json_t *m;
    long failed = 0, succeeded = 0;
    json_array_foreach (results, i, m) {
        json_t *r = json_loads(json_string_value(json_object_get(m, "value")), 0, NULL);
        const char *id = json_string_value(json_object_get(r, "request_id"));
        CU_ASSERT_PTR_NOT_NULL(id);
        TH_EQ_STR(json_string_value(json_object_get(m, "key")), id);
        if (id) {
            if (json_object_get(seen, id))
                fprintf(stderr, "  duplicate result for %s\n", id);
            CU_ASSERT_PTR_NULL(json_object_get(seen, id));
            CU_ASSERT_PTR_NOT_NULL(json_object_get(good_ids, id));
            json_object_set_new(seen, id, json_true());
        }
        const char *st = json_string_value(json_object_get(r, "status"));
        succeeded += st && strcmp(st, "succeeded") == 0;
        failed += st && strcmp(st, "failed") == 0;
        if (st && strcmp(st, "failed") == 0)
            CU_ASSERT_PTR_NOT_NULL(json_object_get(json_object_get(r, "error"), "code"));
        if (id && strcmp(id, "req-batch") == 0) {
            json_t *outs = json_object_get(r, "outputs");
            TH_EQ_INT(json_array_size(outs), 50);
            for (size_t k = 0; k < json_array_size(outs); k++)
                TH_EQ_INT(json_integer_value(json_object_get(json_array_get(outs, k), "index")), k);
        }
        json_decref(r);
    }
    TH_EQ_INT(json_object_size(seen), json_object_size(good_ids));
    TH_EQ_INT(json_array_size(results), json_object_size(good_ids));
    fprintf(stderr, "  results: %ld succeeded, %ld failed\n", succeeded, failed);
    CU_ASSERT(succeeded > 800); /* 10% faults are mostly absorbed by retries */
    json_decref(seen);
    json_decref(results);

    /* Every bad line is in the DLQ, byte for byte, with a reason. */
    json_t *dlq = th_kafka_read_all(cl.bootstrap, "gantry.dlq");
    long bad_total = 0;
    const char *k;
    json_t *v;
    json_object_foreach (bad_lines, k, v)
        bad_total += (long)json_integer_value(v);
    TH_EQ_INT(json_array_size(dlq), bad_total);
    json_array_foreach (dlq, i, m) {
        json_t *e = json_loads(json_string_value(json_object_get(m, "value")), 0, NULL);
        size_t len = 0;
        unsigned char *orig =
            gt_base64_decode(json_string_value(json_object_get(e, "original")), &len);
        CU_ASSERT_PTR_NOT_NULL(orig);
        char *text = orig ? strndup((char *)orig, len) : NULL;
        json_t *n = text ? json_object_get(bad_lines, text) : NULL;
        if (!n)
            fprintf(stderr, "  unexpected DLQ entry: %s\n", text ? text : "(undecodable)");
        CU_ASSERT_PTR_NOT_NULL(n);
        if (n)
            json_integer_set(n, json_integer_value(n) - 1);
        TH_EQ_STR(json_string_value(json_object_get(json_object_get(e, "source"), "topic")),
                  "gantry.requests");
        CU_ASSERT_PTR_NOT_NULL(json_object_get(json_object_get(e, "error"), "code"));
        CU_ASSERT_PTR_NOT_NULL(json_object_get(e, "stage"));
        free(text);
        free(orig);
        json_decref(e);
    }
    json_decref(dlq);

    /* Usage: one row per successful inference call, none twice. The ledger
     * trails the results, so poll for it. */
    CU_ASSERT(th_poll(th_cluster_released_all, &cl, 20000));
    CU_ASSERT(th_poll(usage_caught_up, NULL, 20000));
    long ok_calls = th_mock_stat(&cl, "inference_ok");
    long rows = th_sql_long(cl.conninfo, "SELECT count(*) FROM usage");
    TH_EQ_INT(rows, ok_calls);
    TH_EQ_INT(th_sql_long(cl.conninfo, "SELECT count(DISTINCT task_id) FROM usage"), rows);
    TH_EQ_INT(
        th_sql_long(cl.conninfo,
                    "SELECT count(*) FROM tasks WHERE kind = 'inference' AND status = 'succeeded'"),
        rows);
    TH_EQ_INT(th_mock_stat(&cl, "outstanding_allocations"), 0);
    check_usage_mapping();
    th_cluster_stop(&cl);
    for (int w = 0; w < cl.n_workers; w++)
        TH_EQ_INT(cl.workers[w].status, 0);
    TH_EQ_INT(cl.dispatcher.status, 0);
    json_decref(good_ids);
    json_decref(bad_lines);
}

int main(void)
{
    static const th_test_t tests[] = {{"1,000 requests end to end", test_pipeline}, {NULL, NULL}};
    return th_run("e2e pipeline", tests);
}
