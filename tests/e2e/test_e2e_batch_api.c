/* test_e2e_batch_api.c - gantry-api driven by the vendors' official SDKs
 * (tests/sdk: `openai`, `@anthropic-ai/sdk` under node) against the real
 * pipeline: embedded Kafka, PostgreSQL, dispatcher, two workers and a mock
 * HostedAI failing 30% of calls (some lines fail after every retry; its
 * breaker kept shut so that failures stay per call). The SDK
 * scripts check the vendor-visible contract; this side checks usage rows
 * against succeeded lines and that nothing stays allocated. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"

static th_cluster_t cl;
static th_proc_t api;
static char api_url[160];
static char key_a[128], key_b[128], key_revoked[128], revoked_id[64];

/* `gantry keys create --tenant T`: "KEY_ID SECRET". */
static int create_key(const char *tenant, char *secret, size_t len, char *id, size_t idlen)
{
    th_proc_t p;
    char line[256];
    const char *argv[] = {
        th_bin("tools/gantry"), "keys", "create", "--tenant", tenant, "--config", cl.config, NULL};
    if (th_proc_start(&p, argv, NULL) || th_proc_wait_line(&p, "key_", line, sizeof(line), 10000))
        return -1;
    int st = th_proc_stop(&p, 0, 10000);
    char *sp = strchr(line, ' ');
    if (st != 0 || !sp)
        return -1;
    snprintf(secret, len, "%s", sp + 1);
    if (id)
        snprintf(id, idlen, "key_%.*s", (int)(sp - line), line);
    return 0;
}

static int start(void)
{
    th_cluster_opts_t o = {
        .workers = 2,
        .fail_rate = 0.3,
        .extra_config =
            "{\"pools\": {\"pool-a\": {\"breaker\": {\"failures\": 1000000}}},"
            " \"api\": {\"port\": 0, \"min_completion_window_s\": 1, \"publish_batch\": 200,"
            " \"models\": {\"gpt-4o-mini\": \"auto\", \"claude-3-5-haiku\": \"small\"}}}"};
    if (th_cluster_start(&cl, &o) != 0)
        return -1;
    char log[320], addr[128];
    snprintf(log, sizeof(log), "%s/api.log", cl.logdir);
    const char *argv[] = {th_bin("api/gantry-api"), "--config", cl.config, "--id", "api-e2e", NULL};
    if (th_proc_start(&api, argv, log) ||
        th_proc_wait_line(&api, "api=", addr, sizeof(addr), 20000))
        return -1;
    snprintf(api_url, sizeof(api_url), "http://%s", addr);
    if (create_key("acme", key_a, sizeof(key_a), NULL, 0) ||
        create_key("globex", key_b, sizeof(key_b), NULL, 0) ||
        create_key("acme", key_revoked, sizeof(key_revoked), revoked_id, sizeof(revoked_id)))
        return -1;
    th_proc_t p;
    const char *rargv[] = {
        th_bin("tools/gantry"), "keys", "revoke", revoked_id, "--config", cl.config, NULL};
    if (th_proc_start(&p, rargv, NULL) || th_proc_stop(&p, 0, 10000) != 0)
        return -1;
    setenv("GANTRY_API_URL", api_url, 1);
    setenv("KEY_A", key_a, 1);
    setenv("KEY_B", key_b, 1);
    setenv("KEY_REVOKED", key_revoked, 1);
    return 0;
}

/* Runs one SDK script; returns its summary (owned) or NULL. */
static json_t *run_sdk(const char *script, const char *mode, const char *lines)
{
    th_proc_t p;
    char summary[4096];
    const char *argv[] = {"/usr/bin/node", th_src(script), mode, lines, NULL};
    if (th_proc_start(&p, argv, NULL))
        return NULL;
    int got = th_proc_wait_line(&p, "summary=", summary, sizeof(summary), 600000);
    int st = th_proc_stop(&p, 0, 30000);
    CU_ASSERT_EQUAL(st, 0);
    if (!got)
        fprintf(stderr, "  %s %s: %s\n", mode, lines, summary);
    return got ? NULL : json_loads(summary, 0, NULL);
}

static long summary_int(json_t *s, const char *k)
{
    return (long)json_integer_value(json_object_get(s, k));
}

static int released(void *arg)
{
    return th_cluster_released_all(arg);
}

/* Usage rows of a batch: its request_ids start with the batch id. */
static long usage_rows(const char *batch_id)
{
    char sql[256];
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM usage WHERE request_id LIKE '%s:%%'",
             batch_id);
    return th_sql_long(cl.conninfo, sql);
}

static const char *usage_batch;
static long usage_want;
static int usage_done(void *arg)
{
    return usage_rows(usage_batch) >= usage_want;
}

static void check_usage(json_t *s, const char *field)
{
    usage_batch = json_string_value(json_object_get(s, "batch_id"));
    usage_want = summary_int(s, field);
    CU_ASSERT(th_poll(usage_done, NULL, 30000));
    TH_EQ_INT(usage_rows(usage_batch), usage_want);
    /* every one marked batch traffic (priced by the book's batch versions) */
    char sql[256];
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM usage WHERE request_id LIKE '%s:%%' AND batch",
             usage_batch);
    TH_EQ_INT(th_sql_long(cl.conninfo, sql), usage_want);
}

static char event_sql[256];
static int event_sent(void *arg)
{
    return th_sql_long(cl.conninfo, event_sql) == 1;
}

/* The batch's end is announced once on gantry.events (type, batch_id, counts). */
static void check_event(json_t *s, const char *type)
{
    const char *id = json_string_value(json_object_get(s, "batch_id"));
    snprintf(event_sql, sizeof(event_sql),
             "SELECT count(*) FROM api_batches WHERE batch_id = '%s' AND event_sent", id);
    CU_ASSERT(th_poll(event_sent, NULL, 20000));
    json_t *all = th_kafka_read_all(cl.bootstrap, "gantry.events");
    size_t i;
    json_t *m;
    long n = 0;
    json_array_foreach (all, i, m) {
        json_t *ev = json_loads(json_string_value(json_object_get(m, "value")), 0, NULL);
        json_t *d = json_object_get(ev, "data");
        if (!strcmp(json_string_value(json_object_get(ev, "type")) ?: "", type) &&
            !strcmp(json_string_value(json_object_get(d, "batch_id")) ?: "", id)) {
            n++;
            CU_ASSERT(json_integer_value(
                          json_object_get(json_object_get(d, "request_counts"), "succeeded")) ==
                      summary_int(s, "completed"));
        }
        json_decref(ev);
    }
    TH_EQ_INT(n, 1);
    json_decref(all);
}

static void test_openai(void)
{
    json_t *s = run_sdk("tests/sdk/openai_batch.mjs", "complete", "1000");
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    TH_EQ_STR(json_string_value(json_object_get(s, "status")), "completed");
    TH_EQ_INT(summary_int(s, "completed") + summary_int(s, "failed"), 1000);
    TH_EQ_INT(summary_int(s, "invalid"), 6);
    CU_ASSERT(summary_int(s, "provider_failed") > 0);
    check_usage(s, "completed");
    /* Each line's result recorded once: one row per line, none pending. */
    char sql[256];
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM api_batch_lines WHERE batch_id = '%s'",
             json_string_value(json_object_get(s, "batch_id")));
    TH_EQ_INT(th_sql_long(cl.conninfo, sql), 1000);
    check_event(s, "batch.completed");
    json_decref(s);
}

static void test_openai_cancel(void)
{
    json_t *s = run_sdk("tests/sdk/openai_batch.mjs", "cancel", "5000");
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    TH_EQ_STR(json_string_value(json_object_get(s, "status")), "cancelled");
    TH_EQ_INT(summary_int(s, "completed") + summary_int(s, "failed"), 5000);
    check_usage(s, "completed"); /* billed exactly for what ran */
    check_event(s, "batch.cancelled");
    /* No task starts after the cancel: lines not yet published never are, and
     * no task of a published line starts once its job's cancel is durable
     * (jobs.cancelled_at; the start gate's statement and the cancel's are
     * serialised on the row, 50 ms covers two statements' start times). */
    char sql[512];
    const char *id = json_string_value(json_object_get(s, "batch_id"));
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM jobs j JOIN tasks t USING (request_id)"
             " WHERE j.request_id LIKE '%s:%%' AND j.cancelled_at IS NOT NULL"
             " AND t.started_at > j.cancelled_at + interval '50 milliseconds'",
             id);
    TH_EQ_INT(th_sql_long(cl.conninfo, sql), 0);
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM jobs WHERE request_id LIKE '%s:%%' AND cancelled_at IS NOT NULL",
             id);
    CU_ASSERT(th_sql_long(cl.conninfo, sql) > 0); /* published lines were cancelled as jobs */
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM api_batch_lines WHERE batch_id = '%s' AND NOT published", id);
    CU_ASSERT(th_sql_long(cl.conninfo, sql) > 0); /* cancelled before they went out */
    CU_ASSERT(th_poll(released, &cl, 30000));
    TH_EQ_INT(th_mock_stat(&cl, "outstanding_allocations"), 0);
    json_decref(s);
}

/* completion_window 2s (api.min_completion_window_s allows it here): what
 * has not ended by then ends expired; the batch is expired, its files hold
 * every line. */
static void test_openai_expire(void)
{
    setenv("GANTRY_WINDOW", "2s", 1);
    json_t *s = run_sdk("tests/sdk/openai_batch.mjs", "expire", "5000");
    unsetenv("GANTRY_WINDOW");
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    TH_EQ_STR(json_string_value(json_object_get(s, "status")), "expired");
    TH_EQ_INT(summary_int(s, "completed") + summary_int(s, "failed"), 5000);
    CU_ASSERT(summary_int(s, "stopped") > 0); /* lines ended expired */
    check_usage(s, "completed");
    check_event(s, "batch.expired");
    json_decref(s);
}

static void test_anthropic(void)
{
    json_t *s = run_sdk("tests/sdk/anthropic_batch.mjs", "complete", "1000");
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    TH_EQ_STR(json_string_value(json_object_get(s, "processing_status")), "ended");
    TH_EQ_INT(summary_int(s, "succeeded") + summary_int(s, "errored"), 1000);
    check_usage(s, "succeeded");
    json_decref(s);
}

static void test_setup(void)
{
    CU_ASSERT_EQUAL_FATAL(start(), 0);
}

static void test_teardown(void)
{
    CU_ASSERT(th_poll(released, &cl, 30000));
    TH_EQ_INT(th_mock_stat(&cl, "outstanding_allocations"), 0);
    TH_EQ_INT(th_proc_stop(&api, SIGTERM, 20000), 0);
    th_cluster_stop(&cl);
}

int main(void)
{
    static const th_test_t tests[] = {
        {"cluster, gantry-api and keys", test_setup},
        {"openai SDK: 1,000 lines with bad and failing ones run to completed", test_openai},
        {"anthropic SDK: message batch of 1,000 ends", test_anthropic},
        {"openai SDK: cancel mid-run of 5,000 lines", test_openai_cancel},
        {"openai SDK: completion_window passes", test_openai_expire},
        {"stop", test_teardown},
        {NULL, NULL}};
    return th_run("e2e batch api", tests);
}
